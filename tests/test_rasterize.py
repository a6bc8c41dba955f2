"""Rasterization checked against geometry computed here, independently of OpenCV."""

import numpy as np
import pytest

from beam_jobs import rasterize


def to_pixels(points, size, line_width):
    """Where the documented mapping puts drawing coordinates: uniform scale into the image less
    margin and pen room, centred (pixel centres at integer coordinates)."""
    points = np.asarray(points, dtype=float)
    margin = max(1, round(size / 32))
    low, high = points.min(axis=0), points.max(axis=0)
    extent = (high - low).max()
    scale = (size - 1 - 2 * margin - line_width) / extent if extent else 0.0
    return (points - (low + high) / 2) * scale + (size - 1) / 2


def distance_to_polyline(size, pixels):
    """Distance from every pixel centre to the nearest segment of the polyline."""
    ys, xs = np.mgrid[0:size, 0:size]
    grid = np.stack([xs, ys], axis=-1).astype(float)
    best = np.full((size, size), np.inf)
    for a, b in zip(pixels[:-1], pixels[1:]):
        d = b - a
        t = np.clip(((grid - a) @ d) / (d @ d), 0, 1) if d @ d else np.zeros((size, size))
        best = np.minimum(best, np.linalg.norm(grid - (a + t[..., None] * d), axis=-1))
    return best


@pytest.mark.parametrize("size", [28, 64, 100])
@pytest.mark.parametrize("shape", [
    [[0, 0], [255, 0]],                       # horizontal line
    [[0, 0], [255, 255]],                     # diagonal
    [[0, 0], [200, 40], [90, 255], [0, 0]],   # closed triangle
    [[30, 10], [40, 200]],                    # steep, narrow: aspect kept, centred
])
def test_strokes_land_where_the_geometry_says(size, shape):
    image = rasterize.rasterize(np.array(shape, float), (len(shape),), size=size, line_width=1)
    pixels = to_pixels(shape, size, 1)
    distance = distance_to_polyline(size, pixels)
    ys, xs = np.mgrid[0:size, 0:size]
    near_end = np.min([np.hypot(xs - x, ys - y) for x, y in pixels[[0, -1]]], axis=0) <= 1.5
    assert image.dtype == np.uint8 and image.shape == (size, size)
    # Away from the faded ends, pixels within half a pixel of the stroke are mostly ink and
    # those within 0.75 px carry some; pixels 2 px away carry none (anti-aliasing and the caps spill
    # about one pixel); the ink hugs the stroke.
    assert image[(distance <= 0.5) & ~near_end].min() >= 128
    assert image[(distance <= 0.75) & ~near_end].min() >= 40
    assert image[distance > 2.0].max() == 0
    assert (image * distance).sum() / image.sum() < 0.6


def test_wider_pen_inks_further_from_the_stroke():
    shape = np.array([[0, 128], [255, 128]], float)
    thin = rasterize.rasterize(shape, (2,), size=64, line_width=1)
    thick = rasterize.rasterize(shape, (2,), size=64, line_width=4)
    assert (thick > 0).sum() > 2 * (thin > 0).sum()
    distance = distance_to_polyline(64, to_pixels(shape, 64, 4))
    assert thick[distance <= 1.5].min() >= 200
    assert thick[distance > 3.5].max() == 0


@pytest.mark.parametrize("points,lengths", [
    ([[100, 100]], (1,)),                       # a single point
    ([[7, 7], [7, 7], [7, 7]], (3,)),           # a drawing with no extent
    ([[0, 0], [255, 255], [128, 20]], (2, 1)),  # a line and a lone point
])
def test_points_and_zero_extent_drawings_show_a_dot(points, lengths):
    image = rasterize.rasterize(np.array(points, float), lengths, size=32)
    assert image.max() == 255
    if len(points) == 1 or lengths == (3,):
        # A dot of the line width at the centre of the image, nothing far from it.
        ys, xs = np.nonzero(image)
        assert abs(xs.mean() - 15.5) <= 1 and abs(ys.mean() - 15.5) <= 1
        assert xs.max() - xs.min() <= 3
    else:
        lone = to_pixels(points, 32, 1)[2]
        x, y = np.rint(lone).astype(int)
        assert image[y - 1:y + 2, x - 1:x + 2].max() >= 128


def test_same_strokes_same_pixels():
    points = np.array([[3, 4], [250, 17], [100, 200], [5, 5]], float)
    first = rasterize.rasterize(points, (2, 2), size=64)
    assert np.array_equal(first, rasterize.rasterize(points.copy(), (2, 2), size=64))
