"""Small QuickDraw-like demo data the project makes itself (seeded, no download).

Shapes (circle, square, triangle, zigzag, star) drawn with jitter in both ndjson formats,
a gzip file, a file name with a space, and a few malformed lines so the dead-letter path
shows in the demo.
"""

import gzip
import json
import math
import os
import random
from typing import List

SHAPES = ("circle", "square", "triangle", "zigzag", "star")
BAD_LINES = (
    b'{"word": "circle", "key_id": "bad1", "recognized": true, "drawing": [[[1, 2], [3]]]}',
    b"this is not json",
    b'{"word": "square", "key_id": "bad2", "recognized": true}',
    b'{"word": "star", "key_id": "bad3", "recognized": true, "drawing": []}',
)


def _outline(shape: str, rng: random.Random) -> List[List[tuple]]:
    if shape == "circle":
        n = rng.randint(12, 20)
        return [[(math.cos(2 * math.pi * i / n), math.sin(2 * math.pi * i / n)) for i in range(n + 1)]]
    if shape == "square":
        return [[(-1, -1), (1, -1), (1, 1), (-1, 1), (-1, -1)]]
    if shape == "triangle":
        return [[(0, -1), (1, 0.8), (-1, 0.8), (0, -1)]]
    if shape == "zigzag":
        return [[(-1 + 2 * i / 6, -0.5 if i % 2 else 0.5) for i in range(7)]]
    points = [(math.cos(math.pi / 2 + 4 * math.pi * i / 5), math.sin(math.pi / 2 + 4 * math.pi * i / 5))
              for i in range(6)]
    return [points[:3], points[2:]]


def _drawing(shape: str, rng: random.Random, raw: bool) -> list:
    size, cx, cy = rng.uniform(40, 120), rng.uniform(150, 400), rng.uniform(150, 400)
    strokes, t = [], 0.0
    for stroke in _outline(shape, rng):
        xs = [cx + size * (x + rng.gauss(0, 0.05)) for x, _ in stroke]
        ys = [cy + size * (y + rng.gauss(0, 0.05)) for _, y in stroke]
        if raw:
            ts = [t + 15.0 * i for i in range(len(xs))]
            t = ts[-1] + 200.0
            strokes.append([[round(x, 2) for x in xs], [round(y, 2) for y in ys], ts])
        else:
            strokes.append([xs, ys])
    if raw:
        return strokes
    low_x = min(x for s in strokes for x in s[0])
    low_y = min(y for s in strokes for y in s[1])
    extent = max(max(x for s in strokes for x in s[0]) - low_x, max(y for s in strokes for y in s[1]) - low_y)
    return [[[round((x - low_x) * 255 / extent) for x in s[0]], [round((y - low_y) * 255 / extent) for y in s[1]]]
            for s in strokes]


def make_quickdraw(directory: str, per_shape: int = 40, seed: int = 7) -> List[str]:
    """Writes simplified, raw and gzip ndjson files into `directory`; returns their paths."""
    rng = random.Random(seed)
    os.makedirs(directory, exist_ok=True)
    paths = []
    for index, shape in enumerate(SHAPES):
        raw = index % 2 == 1
        lines = []
        for i in range(per_shape):
            record = {
                "word": shape,
                "countrycode": rng.choice(["US", "DE", "BR", "JP", "FR"]),
                "timestamp": f"2017-03-{1 + i % 28:02d} 12:{i % 60:02d}:00.00000 UTC",
                "recognized": rng.random() > 0.15,
                "key_id": f"{seed}{index:02d}{i:05d}",
                "drawing": _drawing(shape, rng, raw),
            }
            lines.append(json.dumps(record).encode())
        if index == 0:
            lines[5:5] = list(BAD_LINES) + [b""]
        name = f"{'raw' if raw else 'simplified'} {shape}.ndjson"
        path = os.path.join(directory, name + (".gz" if shape == "star" else ""))
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "wb") as handle:
            handle.write(b"\n".join(lines) + b"\n")
        paths.append(path)
    return paths
