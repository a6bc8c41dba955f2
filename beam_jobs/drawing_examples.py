"""QuickDraw drawings -> columns -> tf.train.Example columns (pure functions, no Beam).

The job batches drawings per input file: rasterizing, computing ink and building the Arrow
RecordBatch for the Example encoder (example_bytes) column-wise costs far fewer Python and NumPy calls
than doing it drawing by drawing.
"""

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa

from beam_jobs import example_bytes, rasterize, splits, strokes
from transforms.quickdraw import features


class DrawingBatch(NamedTuple):
    """Parsed, rasterized drawings of one input batch, column by column."""

    key_hashes: np.ndarray  # uint64 hash of key_id: the first part of the order inside a shard.
    key_ids: List[str]
    lines: np.ndarray  # int64 line number in the batch's file
    words: List[str]
    countrycodes: List[str]
    timestamps: List[str]
    recognized: np.ndarray  # int64 0/1
    images: np.ndarray  # (n, size, size) uint8
    ink: np.ndarray  # float32 (dx, dy, pen_up) triples of every drawing, one after another
    ink_points: np.ndarray  # int64 points per drawing
    split: np.ndarray  # int8 index into splits.SPLIT_NAMES
    shard: np.ndarray  # int32


def make_batch(kept: List[Tuple[int, strokes.Drawing]], image_size: int, line_width: int,
               split_ratios: Sequence[float], num_shards: int) -> DrawingBatch:
    """Rasterizes and columnizes (line number, drawing) pairs of one file (pure; no Beam)."""
    drawings = [d for _, d in kept]
    key_bytes = [d.key_id.encode() for d in drawings]
    ink, ink_points = strokes.ink_batch([d.points for d in drawings], [d.lengths for d in drawings])
    return DrawingBatch(
        key_hashes=splits.key_hashes(key_bytes),
        key_ids=[d.key_id for d in drawings],
        lines=np.array([n for n, _ in kept], dtype=np.int64),
        words=[d.word for d in drawings],
        countrycodes=[d.countrycode for d in drawings],
        timestamps=[d.timestamp for d in drawings],
        recognized=np.array([d.recognized for d in drawings], dtype=np.int64),
        images=np.stack([rasterize.rasterize(d.points, d.lengths, image_size, line_width) for d in drawings]),
        ink=ink.reshape(-1),
        ink_points=ink_points,
        split=splits.split_indices(key_bytes, split_ratios),
        shard=splits.shard_indices(key_bytes, num_shards),
    )


def _list_column(values, lengths: np.ndarray) -> pa.Array:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values if isinstance(values, pa.Array) else pa.array(values))


def _bytes_column(values: List[str]) -> pa.Array:
    return _list_column(pa.array([v.encode() for v in values], type=pa.binary()), np.ones(len(values), np.int32))


def to_record_batch(batch: DrawingBatch, image_size: int) -> pa.RecordBatch:
    """Columns for example_bytes.encode_by_column: one list per feature and row, all but the label
    (see `label_pieces`)."""
    n = len(batch.key_ids)
    pixels = batch.images.reshape(n, -1).astype(np.int64).reshape(-1)
    points = batch.ink_points
    ones = np.ones(n, np.int32)
    columns = {
        features.image_key(image_size): _list_column(pixels, np.full(n, image_size * image_size, np.int32)),
        features.WORD_KEY: _bytes_column(batch.words),
        features.COUNTRYCODE_KEY: _bytes_column(batch.countrycodes),
        features.KEY_ID_KEY: _bytes_column(batch.key_ids),
        features.RECOGNIZED_KEY: _list_column(batch.recognized, ones),
        features.TIMESTAMP_KEY: _bytes_column(batch.timestamps),
        features.INK_KEY: _list_column(batch.ink, (points * 3).astype(np.int32)),
        features.INK_SHAPE_KEY: _list_column(np.stack([points, np.full(n, 3)], axis=1).reshape(-1),
                                             np.full(n, 2, np.int32)),
    }
    return pa.RecordBatch.from_arrays(list(columns.values()), list(columns))


class Filters(NamedTuple):
    """--recognized_only and --categories."""

    recognized_only: bool
    categories: Optional[frozenset]

    def keep(self, word: str, recognized: bool) -> bool:
        return (recognized or not self.recognized_only) and (self.categories is None or word in self.categories)


def label_pieces(class_list: Sequence[str]) -> Dict[str, bytes]:
    """Per word, a serialized Example holding only `label` (the word's index in class_list).

    Appended to the bytes of an Example without a label, it adds the label: protobuf parses
    concatenated messages as one merged message. So drawings are encoded before the class
    list is known, and labelled when their shards are written.
    """
    if not class_list:
        return {}
    labels = pa.array(np.arange(len(class_list), dtype=np.int64))
    column = _list_column(labels, np.ones(len(class_list), np.int32))
    pieces = example_bytes.encode_by_column(pa.RecordBatch.from_arrays([column], [features.LABEL_KEY]))
    return dict(zip(class_list, pieces.to_pylist()))
