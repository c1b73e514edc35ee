"""Boxes follow the crop/flip exactly: property tests over image sizes, boxes and resolutions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from interactdiffusion.data.records import ImageRecord, PairRecord
from interactdiffusion.data.synthetic import synthetic_vocabulary
from interactdiffusion.data.transforms import (
    CropGeometry,
    crop_image,
    keeps_box,
    to_tensor,
    training_scene,
    transform_pairs,
)

VOCAB = synthetic_vocabulary()
sizes = st.integers(min_value=8, max_value=2000)
resolutions = st.sampled_from([16, 32, 64, 512])


@st.composite
def image_and_box(draw):
    w, h = draw(sizes), draw(sizes)
    x1 = draw(st.floats(-0.2 * w, 1.1 * w))
    y1 = draw(st.floats(-0.2 * h, 1.1 * h))
    x2 = draw(st.floats(x1, x1 + 1.2 * w))
    y2 = draw(st.floats(y1, y1 + 1.2 * h))
    return w, h, (x1, y1, x2, y2)


def _pair(human, obj, hoi=0):
    c = VOCAB.classes[hoi]
    return PairRecord(human, obj, hoi, c.verb, c.object)


@settings(max_examples=300, deadline=None)
@given(image_and_box(), resolutions, st.booleans())
def test_mapped_boxes_stay_inside_the_crop(case, resolution, flip):
    w, h, box = case
    geometry = CropGeometry.center(w, h, resolution, flip)
    x1, y1, x2, y2 = geometry.map_box(box)
    assert 0.0 <= x1 <= x2 <= resolution and 0.0 <= y1 <= y2 <= resolution


@settings(max_examples=300, deadline=None)
@given(image_and_box(), resolutions)
def test_flip_twice_is_identity(case, resolution):
    w, h, box = case
    geometry = CropGeometry.center(w, h, resolution, flip=True)
    once = geometry.map_box(box)
    r = float(resolution)
    twice = (r - once[2], once[1], r - once[0], once[3])  # flipping the flipped box back
    assert twice == pytest.approx(geometry.flipped(False).map_box(box), abs=1e-9)


@settings(max_examples=300, deadline=None)
@given(st.floats(0.0, 64.0), st.floats(0.0, 64.0), resolutions)
def test_area_filter_is_exact(width, height, resolution):
    box = (0.0, 0.0, width, height)
    expected = width > 0 and height > 0 and width * height >= 0.001 * resolution * resolution
    assert keeps_box(box, resolution) is expected


def test_area_filter_threshold_boundary():
    # 0.1% of 100² = 10 px²: exactly 10 survives, a hair less does not
    assert keeps_box((0.0, 0.0, 10.0, 1.0), 100)
    assert not keeps_box((0.0, 0.0, 9.999, 1.0), 100)


@settings(max_examples=150, deadline=None)
@given(st.lists(image_and_box(), min_size=1, max_size=45), resolutions, st.booleans())
def test_kept_pairs_sorted_largest_first_capped_and_normalised(cases, resolution, flip):
    w, h, _ = cases[0]
    geometry = CropGeometry.center(w, h, resolution, flip)
    pairs = [_pair(box, cases[(k + 1) % len(cases)][2]) for k, (_, _, box) in enumerate(cases)]
    kept = transform_pairs(pairs, geometry)
    assert len(kept) <= 30
    areas = [(s[2] - s[0]) * (s[3] - s[1]) + (o[2] - o[0]) * (o[3] - o[1]) for s, o in
             ((k.subject_box, k.object_box) for k in kept)]
    assert areas == sorted(areas, reverse=True)
    survivors = [p for p in pairs if keeps_box(geometry.map_box(p.human_box), resolution)
                 and keeps_box(geometry.map_box(p.object_box), resolution)]
    assert len(kept) == min(30, len(survivors))
    for k in kept:
        for box in (k.subject_box, k.object_box):
            assert 0.0 <= box[0] < box[2] <= 1.0 and 0.0 <= box[1] < box[3] <= 1.0


def test_geometry_is_shorter_side_then_center():
    g = CropGeometry.center(640, 480, 512)
    assert (g.scale_y, g.crop_y) == (512 / 480, 0)
    assert round(640 * 512 / 480) == 683 and g.crop_x == (683 - 512) // 2
    # a box covering the whole image covers the whole crop
    assert g.map_box((0.0, 0.0, 640.0, 480.0)) == (0.0, 0.0, 512.0, 512.0)


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("size", [(200, 120), (90, 160), (128, 128)])
def test_image_pixels_follow_the_box(size, flip):
    """Paint a box white on black; after crop (+ flip) the white pixels are where the mapped box says."""
    w, h = size
    box = (0.3 * w, 0.25 * h, 0.7 * w, 0.8 * h)
    array = np.zeros((h, w, 3), dtype=np.uint8)
    array[int(box[1]) : int(box[3]), int(box[0]) : int(box[2])] = 255
    geometry = CropGeometry.center(w, h, 64, flip)
    crop = to_tensor(crop_image(Image.fromarray(array), geometry))
    assert crop.shape == (3, 64, 64) and crop.min() >= -1 and crop.max() <= 1
    mask = crop[0] > 0
    ys, xs = torch.nonzero(mask, as_tuple=True)
    x1, y1, x2, y2 = geometry.map_box(box)
    assert abs(xs.min().item() - x1) <= 1.5 and abs(xs.max().item() + 1 - x2) <= 1.5
    assert abs(ys.min().item() - y1) <= 1.5 and abs(ys.max().item() + 1 - y2) <= 1.5


def test_training_scene_phrases_caption_and_empty_crop():
    record = ImageRecord("HICO_train2015_00000009.jpg", 400, 100, [
        _pair((150.0, 10.0, 250.0, 90.0), (160.0, 20.0, 240.0, 80.0), hoi=1),
        _pair((0.0, 0.0, 20.0, 100.0), (0.0, 50.0, 10.0, 100.0), hoi=0),  # cropped away (left margin)
    ])
    scene = training_scene(record, VOCAB, CropGeometry.center(400, 100, 64))
    assert scene.id == "HICO_train2015_00000009" and (scene.width, scene.height) == (64, 64)
    assert [(i.subject, i.action, i.object) for i in scene.interactions] == [("person", "riding", "bicycle")]
    assert scene.caption == "a person is riding a bicycle"
    only_cropped = ImageRecord(record.file_name, 400, 100, [record.pairs[1]])
    empty = training_scene(only_cropped, VOCAB, CropGeometry.center(400, 100, 64))
    assert empty.interactions == () and empty.caption == "a person is holding a bicycle"
