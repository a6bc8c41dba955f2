"""What a trainer imports: the transform output of `beam_jobs.analyze_and_transform`.

    from transforms.trainer import TransformOutput

    output = TransformOutput("out/taxi_transformed")
    train = output.input_fn("train", batch_size=256, label_key="big_tipper")
    model.fit(train, ...)
    serve = output.serving_fn(model, raw_label_keys=["tips"])  # serialized raw Examples in
    tf.saved_model.save(module_with(serve), ...)

Training reads the transformed TFRecords; serving parses raw tf.train.Examples with the raw
schema and applies the same transform_fn through TFT's transform_features_layer, so a model
sees the same features at training and serving time (no skew). Under it is a plain
`tft.TFTransformOutput`, available as `.tft_output`.
"""

import os
from typing import Dict, Iterable, List, Optional

import tensorflow as tf
import tensorflow_transform as tft

SPLITS = ("train", "eval", "test")


class TransformOutput:
    """An analyze_and_transform output directory, seen from a trainer."""

    def __init__(self, transform_dir: str):
        if not tf.io.gfile.exists(os.path.join(transform_dir, tft.TFTransformOutput.TRANSFORM_FN_DIR)):
            raise FileNotFoundError(
                f"{transform_dir} has no transform_fn/; run beam_jobs.analyze_and_transform into it first")
        self.transform_dir = transform_dir
        self.tft_output = tft.TFTransformOutput(transform_dir)

    def transformed_feature_spec(self) -> Dict[str, tf.io.FixedLenFeature]:
        return self.tft_output.transformed_feature_spec()

    def raw_feature_spec(self) -> dict:
        return self.tft_output.raw_feature_spec()

    def files(self, split: str) -> List[str]:
        """The transformed TFRecord shards of one split, in shard order."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return sorted(tf.io.gfile.glob(os.path.join(self.transform_dir, f"{split}-*-of-*.tfrecord*")))

    def input_fn(self, split: str, batch_size: int, label_key: Optional[str] = None, *,
                 shuffle: bool = False, num_epochs: Optional[int] = 1, seed: Optional[int] = None) -> tf.data.Dataset:
        """Batches of transformed features (and the label split off when label_key is given).

        Shards are read in order and, unless shuffle is set, rows come in file order.
        """
        files = self.files(split)
        if not files:
            raise FileNotFoundError(f"no {split} TFRecords in {self.transform_dir}")
        spec = self.transformed_feature_spec()
        if label_key is not None and label_key not in spec:
            raise KeyError(f"label_key {label_key!r} is not a transformed feature: {sorted(spec)}")
        compression = "GZIP" if files[0].endswith(".gz") else ""
        dataset = tf.data.TFRecordDataset(files, compression_type=compression)
        if shuffle:
            dataset = dataset.shuffle(buffer_size=max(batch_size * 16, 1024), seed=seed)
        dataset = dataset.repeat(num_epochs).batch(batch_size)
        dataset = dataset.map(lambda records: tf.io.parse_example(records, spec),
                              num_parallel_calls=tf.data.AUTOTUNE)
        if label_key is not None:
            dataset = dataset.map(lambda features: (features, features.pop(label_key)))
        return dataset.prefetch(tf.data.AUTOTUNE)

    def serving_fn(self, model=None, raw_label_keys: Iterable[str] = ()):
        """A tf.function from serialized raw tf.train.Examples to transformed features.

        With a model, it returns the model's outputs on those features instead. Raw features
        named in raw_label_keys are not parsed (a serving request has no label); transformed
        features that need them are then left out. When saving, also keep the layer on a
        tracked object (`model.tft_layer = output.tft_output.transform_features_layer()`, the
        same cached layer) so the transform_fn's assets are saved with the model.
        """
        layer = self.tft_output.transform_features_layer()
        raw_spec = {key: spec for key, spec in self.raw_feature_spec().items() if key not in set(raw_label_keys)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(serialized):
            transformed = layer(tf.io.parse_example(serialized, raw_spec))
            return transformed if model is None else model(transformed)

        return serve
