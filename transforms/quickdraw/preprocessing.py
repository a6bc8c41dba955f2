"""The QuickDraw preprocessing_fns: what `beam_jobs.analyze_and_transform --dataset quickdraw` runs.

Rasterizing happens in the ingest job (NumPy, not a graph op), so the Examples already hold
the `img_N` bitmap; here it is only scaled, and the categorical features are encoded.

Two ways to get the class label, pick with `--preprocessing_fn`:
    transforms.quickdraw.preprocessing:preprocessing_fn             label = index in labels.txt
    transforms.quickdraw.preprocessing:preprocessing_fn_word_vocab  label = vocabulary on `word`
"""

import tensorflow as tf
import tensorflow_transform as tft

from transforms.quickdraw import features

IMAGE_KEY = "image_xf"  # float32 [N*N] in [0, 1], row-major
LABEL_KEY = "label_xf"  # int64 class index
COUNTRYCODE_KEY = "countrycode_xf"  # int64 vocabulary index; unseen codes -> OOV bucket
RECOGNIZED_KEY = "recognized_xf"  # int64 0/1

COUNTRYCODE_VOCAB = "countrycode_vocab"
WORD_VOCAB = "word_vocab"
COUNTRYCODE_OOV_BUCKETS = 1
# An empty country code would be dropped by the vocabulary (it ignores ""): name it instead.
MISSING_COUNTRYCODE = "__missing__"


def _image_key(inputs) -> str:
    keys = [key for key in inputs if key.startswith("img_")]
    if len(keys) != 1:
        raise ValueError(f"expected one img_N feature, got {sorted(inputs)}")
    return keys[0]


def _squeeze(x):
    """[batch, 1] -> [batch] for the one-value features."""
    return tf.reshape(x, [-1])


def _common(inputs):
    image = tf.cast(inputs[_image_key(inputs)], tf.float32) / 255.0
    countrycode = _squeeze(inputs[features.COUNTRYCODE_KEY])
    countrycode = tf.where(tf.equal(countrycode, ""), MISSING_COUNTRYCODE, countrycode)
    return {
        IMAGE_KEY: image,
        COUNTRYCODE_KEY: tft.compute_and_apply_vocabulary(
            countrycode, num_oov_buckets=COUNTRYCODE_OOV_BUCKETS, vocab_filename=COUNTRYCODE_VOCAB),
        RECOGNIZED_KEY: _squeeze(inputs[features.RECOGNIZED_KEY]),
    }


def preprocessing_fn(inputs):
    """Scaled image, encoded country code, and the label the ingest job gave (labels.txt order).

    Args:
      inputs: the Example features of transforms.quickdraw.features.feature_spec(N).

    Returns:
      IMAGE_KEY, LABEL_KEY, COUNTRYCODE_KEY, RECOGNIZED_KEY -> Tensors.
    """
    outputs = _common(inputs)
    outputs[LABEL_KEY] = _squeeze(inputs[features.LABEL_KEY])
    return outputs


def preprocessing_fn_word_vocab(inputs):
    """As preprocessing_fn, but the label is a vocabulary index of `word` (most frequent first)."""
    outputs = _common(inputs)
    outputs[LABEL_KEY] = tft.compute_and_apply_vocabulary(_squeeze(inputs[features.WORD_KEY]), vocab_filename=WORD_VOCAB)
    return outputs
