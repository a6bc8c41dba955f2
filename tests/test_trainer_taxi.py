"""transforms.trainer: a Keras model trains through it, and serving sees the batch job's features."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tests import taxi_runs
from transforms.taxi import features
from transforms.trainer import TransformOutput


@pytest.fixture(scope="module")
def output(shared_data):
    return TransformOutput(taxi_runs.chain()["transformed"])


def tiny_model(feature_names):
    inputs = {name: tf_keras.Input(shape=(), name=name, dtype=tf.float32) for name in feature_names}
    stacked = tf_keras.layers.Concatenate()([tf_keras.layers.Reshape((1,))(inputs[n]) for n in feature_names])
    hidden = tf_keras.layers.Dense(8, activation="relu")(stacked)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(1, activation="sigmoid")(hidden))
    model.compile(optimizer="adam", loss="binary_crossentropy")
    return model


MODEL_FEATURES = [features.transformed_name(k) for k in (*features.DENSE_FLOAT_FEATURE_KEYS, *features.BUCKET_FEATURES,
                                                          features.HOUR_OF_WEEK_KEY)]


def as_float_inputs(batch):
    return {name: tf.cast(batch[name], tf.float32) for name in MODEL_FEATURES}


def test_input_fn_batches_transformed_features_and_label(output):
    spec = output.transformed_feature_spec()
    assert features.LABEL_KEY in spec and "fare_xf" in spec
    batches = list(output.input_fn("eval", batch_size=500, label_key=features.LABEL_KEY))
    rows = sum(int(labels.shape[0]) for _, labels in batches)
    assert rows == len(taxi_runs.records(output.transform_dir, "eval"))
    first_features, first_labels = batches[0]
    assert features.LABEL_KEY not in first_features and first_features["fare_xf"].shape == (500,)
    assert set(np.unique(first_labels.numpy())) <= {0, 1}


def test_keras_model_trains_one_epoch_through_the_import_api(output):
    tf_keras.utils.set_random_seed(0)
    model = tiny_model(MODEL_FEATURES)
    train = output.input_fn("train", batch_size=256, label_key=features.LABEL_KEY, shuffle=True, seed=0)
    train_rows = len(taxi_runs.records(output.transform_dir, "train"))
    assert sum(1 for _ in train) == math.ceil(train_rows / 256)
    before = model.evaluate(output.input_fn("eval", 512, features.LABEL_KEY).map(
        lambda x, y: (as_float_inputs(x), y)), verbose=0)
    history = model.fit(train.map(lambda x, y: (as_float_inputs(x), y)), epochs=1, verbose=0)
    assert len(history.history["loss"]) == 1 and math.isfinite(history.history["loss"][0])
    after = model.evaluate(output.input_fn("eval", 512, features.LABEL_KEY).map(
        lambda x, y: (as_float_inputs(x), y)), verbose=0)
    assert after < before  # it learned something from the transformed features


def test_serving_fn_on_raw_examples_gives_the_batch_features(output):
    """Training/serving skew = 0: every eval row, every transformed feature, exactly equal."""
    dirs = taxi_runs.chain()
    pairs = taxi_runs.raw_and_transformed(dirs["examples"], dirs["transformed"], "eval")
    raw = tf.constant([r for r, _ in pairs])
    served = output.serving_fn()(raw)
    batch = tf.io.parse_example(tf.constant([x for _, x in pairs]), output.transformed_feature_spec())
    assert sorted(served) == sorted(batch)
    for name in batch:
        np.testing.assert_array_equal(served[name].numpy(), batch[name].numpy(), err_msg=name)


def test_serving_fn_with_model_and_no_label_matches_batch_predictions(output, tmp_path):
    dirs = taxi_runs.chain()
    pairs = taxi_runs.raw_and_transformed(dirs["examples"], dirs["transformed"], "test")[:200]
    model = tiny_model(MODEL_FEATURES)
    serve = output.serving_fn(lambda transformed: model(as_float_inputs(transformed)), raw_label_keys=["tips"])
    served = serve(tf.constant([r for r, _ in pairs]))
    batch = tf.io.parse_example(tf.constant([x for _, x in pairs]), output.transformed_feature_spec())
    # Same features (exact, see above); the model itself may round differently in a graph.
    np.testing.assert_allclose(served.numpy(), model(as_float_inputs(batch)).numpy(), rtol=1e-6)

    # Saved with the transform layer tracked, it serves the same from disk.
    module = tf.Module()
    module.model, module.tft_layer = model, output.tft_output.transform_features_layer()
    module.serve = serve
    tf.saved_model.save(module, str(tmp_path / "model"), signatures={"serving_default": serve})
    loaded = tf.saved_model.load(str(tmp_path / "model"))
    reloaded = loaded.signatures["serving_default"](examples=tf.constant([r for r, _ in pairs]))
    np.testing.assert_array_equal(list(reloaded.values())[0].numpy(), served.numpy())
