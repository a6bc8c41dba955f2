"""Strokes -> anti-aliased grayscale bitmap (pure NumPy + OpenCV, no Beam).

The drawing is scaled uniformly to fit the image less a margin, centred, and drawn with
ink 255 on background 0. Coordinates go to OpenCV as fixed-point integers (2 fractional
bits, `shift=2`): sub-pixel exact, and faster than rounding floats per stroke. All
strokes are drawn in one polylines call. A single point, or a drawing with no extent,
becomes a round dot of the line width.
"""

from typing import Optional, Sequence

import cv2
import numpy as np

MIN_SIZE, MAX_SIZE = 8, 512
_SHIFT = 2
_ONE = 1 << _SHIFT


def default_margin(size: int) -> int:
    return max(1, round(size / 32))


def rasterize(points: np.ndarray, lengths: Sequence[int], size: int = 64, line_width: int = 1,
              margin: Optional[int] = None) -> np.ndarray:
    """Returns a (size, size) uint8 image of the strokes: `points` (n, 2) x, y one stroke after
    another, `lengths` the number of points of each stroke."""
    margin = default_margin(size) if margin is None else margin
    (x0, y0), (x1, y1) = points.min(axis=0).tolist(), points.max(axis=0).tolist()
    extent = max(x1 - x0, y1 - y0)
    # Room for the pen: half a line width (plus anti-aliasing) on each side stays inside the margin.
    room = size - 1 - 2 * margin - line_width
    scale = room / extent if extent > 0 else 0.0
    centre = (size - 1) / 2.0
    # Fixed point; adding 0.5 before truncation rounds, as every coordinate is positive here.
    shift = ((centre - (x0 + x1) / 2.0 * scale) * _ONE + 0.5, (centre - (y0 + y1) / 2.0 * scale) * _ONE + 0.5)
    fixed = (points * (scale * _ONE) + shift).astype(np.int32)
    image = np.zeros((size, size), dtype=np.uint8)
    lines, dots, start = [], [], 0
    for n in lengths:
        stroke = fixed[start:start + n]
        start += n
        # polylines draws nothing for a lone point: those become dots.
        if extent > 0 and n > 1 and (n > 2 or (stroke[0] != stroke[1]).any()):
            lines.append(stroke)
        else:
            dots.append(stroke[0])
    if lines:
        cv2.polylines(image, lines, False, 255, line_width, cv2.LINE_AA, _SHIFT)
    radius = max(_ONE // 2, line_width * _ONE // 2)
    for x, y in dots:
        cv2.circle(image, (int(x), int(y)), radius, 255, -1, cv2.LINE_AA, _SHIFT)
    return image
