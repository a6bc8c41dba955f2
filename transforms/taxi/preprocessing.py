"""The taxi preprocessing_fn: what `beam_jobs.analyze_and_transform --dataset taxi` runs.

Trainers import it only to know the output; they apply it through the saved transform_fn
(see transforms.trainer), so training and serving run the same graph.

Raw features may arrive dense (a schema `shape`, every row has the value) or sparse (a
`value_count`, the value may be missing): `_fill_in_missing` makes both a dense [batch]
tensor, as the TFX taxi example's helper of that name does.
"""

import tensorflow as tf
import tensorflow_transform as tft

from transforms.taxi import features


def _fill_in_missing(x, default):
    """A [batch] tensor from a [batch, 1] dense or sparse feature; missing values -> default."""
    if isinstance(x, tf.sparse.SparseTensor):
        x = tf.sparse.to_dense(
            tf.SparseTensor(x.indices, x.values, [x.dense_shape[0], 1]),
            default_value=tf.cast(default, x.dtype))
    return tf.squeeze(x, axis=1)


def _present_only(x):
    """The feature with missing values left missing (a SparseTensor), so analyzers skip them."""
    if isinstance(x, tf.sparse.SparseTensor):
        return tf.SparseTensor(x.indices, x.values, [x.dense_shape[0], 1])
    return x


def _bucketize_present(x, num_buckets: int):
    """Quantile buckets computed over present values; a missing value gets bucket num_buckets."""
    buckets = tft.bucketize(_present_only(x), num_buckets)
    return _fill_in_missing(buckets, num_buckets)


def _big_tipper(fare, tips):
    """The label: tips > TIP_FRACTION * fare, as int64; 0 when the fare is missing."""
    fare = _fill_in_missing(fare, float("nan"))
    tips = _fill_in_missing(tips, 0.0)
    big = tf.greater(tips, tf.multiply(fare, features.TIP_FRACTION))
    return tf.where(tf.math.is_nan(fare), tf.zeros_like(big, tf.int64), tf.cast(big, tf.int64))


def _hour_of_week(day, hour):
    """(day - 1) * 24 + hour for day 1..7 and hour 0..23; HOUR_OF_WEEK_UNKNOWN otherwise."""
    day = _fill_in_missing(day, 0)
    hour = _fill_in_missing(hour, -1)
    valid = (day >= 1) & (day <= 7) & (hour >= 0) & (hour <= 23)
    cross = (day - 1) * 24 + hour
    return tf.where(valid, cross, tf.fill(tf.shape(cross), tf.constant(features.HOUR_OF_WEEK_UNKNOWN, cross.dtype)))


def preprocessing_fn(inputs):
    """TFT preprocessing for the taxi features.

    Args:
      inputs: raw feature name -> Tensor or SparseTensor, as TFT gives them from the schema.

    Returns:
      transformed feature name (`<raw>_xf`, `hour_of_week_xf`, and the label
      `features.LABEL_KEY`) -> dense [batch] Tensor.
    """
    outputs = {}
    for key in features.DENSE_FLOAT_FEATURE_KEYS:
        value = tf.cast(_fill_in_missing(inputs[key], 0), tf.float32)
        outputs[features.transformed_name(key)] = tft.scale_to_z_score(value)

    for key, num_buckets in features.BUCKET_FEATURES.items():
        outputs[features.transformed_name(key)] = _bucketize_present(inputs[key], num_buckets)

    for key, (top_k, num_oov_buckets) in features.VOCAB_FEATURES.items():
        value = _fill_in_missing(inputs[key], features.MISSING_TOKEN)
        outputs[features.transformed_name(key)] = tft.compute_and_apply_vocabulary(
            value, top_k=top_k, num_oov_buckets=num_oov_buckets,
            vocab_filename=features.vocabulary_name(key))

    for key in features.CATEGORICAL_INT_FEATURE_KEYS:
        outputs[features.transformed_name(key)] = _fill_in_missing(inputs[key], 0)

    outputs[features.transformed_name(features.HOUR_OF_WEEK_KEY)] = _hour_of_week(
        inputs[features.DAY_KEY], inputs[features.HOUR_KEY])

    # Derived label, kept apart from the inputs: it is what the model predicts.
    outputs[features.LABEL_KEY] = _big_tipper(inputs[features.FARE_KEY], inputs[features.TIPS_KEY])
    return outputs
