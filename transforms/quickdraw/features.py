"""The tf.train.Example features written by `beam_jobs.quickdraw_to_tfrecord`.

Trainers read the TFRecords with `feature_spec(image_size)` rather than retyping it:

    ds = tf.data.TFRecordDataset(files).map(
        lambda r: tf.io.parse_single_example(r, features.feature_spec(64)))
"""

DEFAULT_IMAGE_SIZE = 64

LABEL_KEY = "label"  # int64 index into labels.txt (sorted class names).
WORD_KEY = "word"  # bytes: the class name.
COUNTRYCODE_KEY = "countrycode"  # bytes, as in the source record ("" when absent).
KEY_ID_KEY = "key_id"  # bytes: the drawing's id; also the split key.
RECOGNIZED_KEY = "recognized"  # int64 0/1: did the game's model recognise the drawing.
TIMESTAMP_KEY = "timestamp"  # bytes, as given in the source record.
INK_KEY = "ink"  # float list of (dx, dy, pen_up) triples, drawing scaled to unit size.
INK_SHAPE_KEY = "ink_shape"  # int64 [num_points, 3].

LABELS_FILE = "labels.txt"


def image_key(image_size: int = DEFAULT_IMAGE_SIZE) -> str:
    """`img_64` for 64x64: an int64 list of size*size pixels 0..255, row-major, ink high."""
    return f"img_{image_size}"


def feature_spec(image_size: int = DEFAULT_IMAGE_SIZE) -> dict:
    """The parsing spec for one Example (ink is variable-length, hence VarLen)."""
    import tensorflow as tf  # Here, not at the top: Beam workers use the names above without TF.

    return {
        image_key(image_size): tf.io.FixedLenFeature([image_size * image_size], tf.int64),
        LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
        WORD_KEY: tf.io.FixedLenFeature([], tf.string),
        COUNTRYCODE_KEY: tf.io.FixedLenFeature([], tf.string),
        KEY_ID_KEY: tf.io.FixedLenFeature([], tf.string),
        RECOGNIZED_KEY: tf.io.FixedLenFeature([], tf.int64),
        TIMESTAMP_KEY: tf.io.FixedLenFeature([], tf.string),
        INK_KEY: tf.io.VarLenFeature(tf.float32),
        INK_SHAPE_KEY: tf.io.FixedLenFeature([2], tf.int64),
    }
