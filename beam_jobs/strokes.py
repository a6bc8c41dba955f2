"""QuickDraw ndjson records: parsing, validation and normalization (pure functions, no Beam).

Two formats exist. *simplified*: strokes `[[x...], [y...]]`, integer coordinates in
0..255. *raw*: strokes `[[x...], [y...], [t...]]`, float screen coordinates of any range.
Raw strokes are normalized the way the published simplified set was made: aligned to a
minimum of 0, scaled uniformly so the longer side spans 0..255, resampled at 1-pixel
spacing, simplified with Ramer-Douglas-Peucker (epsilon 2.0), rounded to integers.
"""

import dataclasses
import json
from typing import List, Sequence, Tuple

import numpy as np
import orjson

SIMPLIFIED = "simplified"
RAW = "raw"
AUTO = "auto"
FORMATS = (AUTO, SIMPLIFIED, RAW)
REQUIRED_KEYS = ("key_id", "word", "recognized", "drawing")
DEFAULT_MAX_POINTS = 20_000
DEFAULT_RDP_EPSILON = 2.0


class Rejected(ValueError):
    """A record that cannot be used; `reason` is a stable code for counters and dead letters."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclasses.dataclass(frozen=True)
class Drawing:
    """A validated drawing in simplified 0..255 coordinates.

    `points` is (n, 2) float64, all strokes one after the other; `lengths` gives the number
    of points of each stroke (one array instead of one per stroke keeps NumPy calls few).
    """

    key_id: str
    word: str
    countrycode: str
    timestamp: str
    recognized: bool
    points: np.ndarray
    lengths: Tuple[int, ...]
    source_format: str

    @property
    def strokes(self) -> List[np.ndarray]:
        return np.split(self.points, np.cumsum(self.lengths)[:-1])


def _loads(line: bytes):
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as error:
        # orjson refuses NaN/Infinity literals; the standard parser accepts them, so such a
        # line is reported for its real problem (non_finite) rather than as broken JSON.
        try:
            return json.loads(line)
        except (ValueError, UnicodeDecodeError):
            raise Rejected("invalid_json", str(error)) from None


def _text(record: dict, key: str, required: bool) -> str:
    value = record.get(key)
    if value is None:
        if required:
            raise Rejected("missing_key", f"required key {key!r} is missing")
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Rejected("bad_field_type", f"{key!r} must be a string, got {type(value).__name__}")
    return value if isinstance(value, str) else json.dumps(value)


def _stroke_lengths(drawing: list) -> Tuple[str, List[int]]:
    """The drawing's format (by how many coordinate lists each stroke has) and stroke lengths."""
    components, lengths = set(), []
    for index, stroke in enumerate(drawing):
        if type(stroke) is not list or not all(type(c) is list for c in stroke):
            raise Rejected("bad_stroke", f"stroke {index} is not a list of coordinate lists")
        if len(stroke) not in (2, 3):
            raise Rejected("bad_stroke", f"stroke {index} has {len(stroke)} coordinate lists, expected 2 or 3")
        components.add(len(stroke))
        n = len(stroke[0])
        if len(stroke[1]) != n or len(stroke[-1]) != n:
            raise Rejected("length_mismatch",
                           f"stroke {index} has coordinate lists of lengths {[len(c) for c in stroke]}")
        if not n:
            raise Rejected("empty_stroke", f"stroke {index} has no points")
        lengths.append(n)
    if len(components) > 1:
        raise Rejected("bad_stroke", "strokes mix the simplified [x, y] and raw [x, y, t] forms")
    return (SIMPLIFIED if components.pop() == 2 else RAW), lengths


def _points(drawing: list) -> np.ndarray:
    """All strokes' (x, y) as one (n, 2) float64 array; rejects non-numbers and NaN/inf."""
    xs = [v for stroke in drawing for v in stroke[0]]
    ys = [v for stroke in drawing for v in stroke[1]]
    try:
        points = np.array((xs, ys))
    except (ValueError, TypeError):
        points = None
    if points is None or points.dtype.kind not in "iuf":
        raise Rejected("non_numeric", "a coordinate is not a number")
    points = points.T.astype(np.float64)
    if not np.isfinite(points).all():
        raise Rejected("non_finite", "a coordinate is NaN or infinite")
    return points


def parse_drawing(line: bytes, source_format: str = AUTO, max_points: int = DEFAULT_MAX_POINTS,
                  rdp_epsilon: float = DEFAULT_RDP_EPSILON) -> Drawing:
    """Parses and validates one ndjson line; raises Rejected with a reason code."""
    record = _loads(line)
    if not isinstance(record, dict):
        raise Rejected("not_an_object", f"expected a JSON object, got {type(record).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing:
        raise Rejected("missing_key", f"required keys missing: {', '.join(missing)}")
    recognized = record["recognized"]
    if not isinstance(recognized, bool):
        raise Rejected("bad_field_type", f"'recognized' must be true or false, got {recognized!r}")
    word = _text(record, "word", required=True)
    if not word:
        raise Rejected("bad_field_type", "'word' is empty")
    drawing = record["drawing"]
    if not isinstance(drawing, list):
        raise Rejected("drawing_not_list", f"'drawing' must be a list of strokes, got {type(drawing).__name__}")
    if not drawing:
        raise Rejected("no_strokes", "'drawing' has no strokes")
    detected, lengths = _stroke_lengths(drawing)
    if source_format != AUTO and detected != source_format:
        raise Rejected("format_mismatch", f"--format {source_format} but the strokes are {detected}")
    if sum(lengths) > max_points:
        raise Rejected("too_many_points", f"{sum(lengths)} points, more than --max_points {max_points}")
    points = _points(drawing)
    if detected == SIMPLIFIED:
        low, high = points.min(), points.max()
        if low < 0 or high > 255:
            raise Rejected("out_of_range", f"simplified coordinates must lie in 0..255, found {low:g}..{high:g}")
    else:
        strokes = normalize_raw(np.split(points, np.cumsum(lengths)[:-1]), rdp_epsilon)
        points, lengths = np.concatenate(strokes), [len(stroke) for stroke in strokes]
    return Drawing(
        key_id=_text(record, "key_id", required=True),
        word=word,
        countrycode=_text(record, "countrycode", required=False),
        timestamp=_text(record, "timestamp", required=False),
        recognized=recognized,
        points=points,
        lengths=tuple(lengths),
        source_format=detected,
    )


def resample(points: np.ndarray, spacing: float = 1.0) -> np.ndarray:
    """Points at `spacing` along the polyline's arc length, keeping both ends."""
    if len(points) < 2:
        return points
    steps = np.hypot(*np.diff(points, axis=0).T)
    arc = np.concatenate(([0.0], np.cumsum(steps)))
    if arc[-1] == 0:
        return points[:1]
    targets = np.arange(0.0, arc[-1], spacing)
    if arc[-1] - targets[-1] > 1e-9:
        targets = np.append(targets, arc[-1])
    return np.stack([np.interp(targets, arc, points[:, 0]), np.interp(targets, arc, points[:, 1])], axis=1)


def simplify(points: np.ndarray, epsilon: float) -> np.ndarray:
    """Ramer-Douglas-Peucker on an open stroke: both ends stay, even when they coincide.

    (OpenCV's approxPolyDP drops the closing part of a stroke that ends where it began.)
    """
    if epsilon <= 0 or len(points) < 3:
        return points
    keep = np.zeros(len(points), dtype=bool)
    keep[[0, -1]] = True
    spans = [(0, len(points) - 1)]
    while spans:
        first, last = spans.pop()
        if last - first < 2:
            continue
        (dx, dy), inner = points[last] - points[first], points[first + 1:last] - points[first]
        length = np.hypot(dx, dy)
        # Distance to the line through the span's ends (the classic RDP measure), or to the
        # point itself when the ends coincide.
        distance = (np.abs(dx * inner[:, 1] - dy * inner[:, 0]) / length if length
                    else np.hypot(inner[:, 0], inner[:, 1]))
        farthest = int(np.argmax(distance))
        if distance[farthest] > epsilon:
            split = first + 1 + farthest
            keep[split] = True
            spans += [(first, split), (split, last)]
    return points[keep]


def normalize_raw(strokes: List[np.ndarray], rdp_epsilon: float = DEFAULT_RDP_EPSILON) -> List[np.ndarray]:
    """Raw screen strokes -> simplified-format strokes (integers in 0..255)."""
    points = np.concatenate(strokes)
    low, high = points.min(axis=0), points.max(axis=0)
    extent = float((high - low).max())
    scale = 255.0 / extent if extent > 0 else 0.0
    normalized = []
    for stroke in strokes:
        points = resample((stroke - low) * scale)
        points = np.rint(simplify(points, rdp_epsilon))
        normalized.append(np.clip(points, 0, 255))
    return normalized


def ink_batch(points: Sequence[np.ndarray], lengths: Sequence[Sequence[int]]) -> Tuple[np.ndarray, np.ndarray]:
    """Ink of many drawings at once: ((total points, 3) float32, points per drawing).

    Each drawing's rows are (dx, dy, pen_up): offsets from the previous point (the first
    from the drawing's top-left corner), scaled so the longer side of the drawing is 1,
    aspect kept; pen_up is 1 on the last point of every stroke. Vectorized over the batch
    because per-drawing NumPy calls cost more than the arithmetic.
    """
    counts = np.array([len(p) for p in points], dtype=np.int64)
    every = np.concatenate(points)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    low = np.minimum.reduceat(every, starts)
    extent = (np.maximum.reduceat(every, starts) - low).max(axis=1)
    extent[extent == 0] = 1.0
    offsets = np.empty_like(every)
    offsets[1:] = every[1:] - every[:-1]
    offsets[starts] = every[starts] - low
    out = np.zeros((len(every), 3), dtype=np.float32)
    out[:, :2] = offsets / np.repeat(extent, counts)[:, None]
    out[np.cumsum([n for drawing in lengths for n in drawing]) - 1, 2] = 1.0
    return out, counts


def ink(points: np.ndarray, lengths: Sequence[int]) -> np.ndarray:
    """(num_points, 3) float32 ink of one drawing (see ink_batch)."""
    return ink_batch([points], [lengths])[0]
