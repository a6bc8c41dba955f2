"""A PNG contact sheet of rasterized samples per class, for a person to look at."""

import math
from typing import Dict, Sequence

import cv2
import numpy as np

_LABEL_WIDTH = 120


def contact_sheet(samples: Dict[str, Sequence[np.ndarray]], per_class: int) -> bytes:
    """One block per class (name, then up to `per_class` images), blocks in a near-square grid.

    Ink is drawn dark on white, the way people expect a drawing to look.
    """
    words = sorted(samples)
    if not words:
        words, samples = ["(no drawings)"], {"(no drawings)": []}
    size = next((len(images[0]) for images in samples.values() if len(images)), 64)
    cell = size + 4
    block_w, block_h = _LABEL_WIDTH + per_class * cell, cell
    columns = max(1, min(len(words), round(math.sqrt(len(words) * block_h / block_w)) or 1))
    rows = math.ceil(len(words) / columns)
    sheet = np.full((rows * block_h + 4, columns * block_w + 4), 255, dtype=np.uint8)
    for index, word in enumerate(words):
        top = (index // columns) * block_h + 4
        left = (index % columns) * block_w + 4
        label = word if len(word) <= 16 else word[:15] + "~"
        cv2.putText(sheet, label, (left, top + cell // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 0, 1, cv2.LINE_AA)
        for i, image in enumerate(samples[word][:per_class]):
            x = left + _LABEL_WIDTH + i * cell
            sheet[top:top + size, x:x + size] = 255 - image
            cv2.rectangle(sheet, (x - 1, top - 1), (x + size, top + size), 200, 1)
    ok, png = cv2.imencode(".png", sheet)
    assert ok, "OpenCV failed to encode the contact sheet"
    return png.tobytes()
