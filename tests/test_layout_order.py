"""Slot i of the instance embedding means the same pair in training and in generation: the i-th largest
(subject + object area), ties in annotation order; exported test layouts use the training order."""

from __future__ import annotations

import pytest

from interactdiffusion.data.layouts import layout_scene
from interactdiffusion.data.records import ImageRecord, PairRecord
from interactdiffusion.data.synthetic import synthetic_vocabulary
from interactdiffusion.data.transforms import CropGeometry, training_scene


def test_test_layouts_are_ordered_as_training_orders_pairs():
    vocab = synthetic_vocabulary()
    c = vocab.classes

    def pair(hoi, human, obj):
        return PairRecord(human, obj, hoi, c[hoi].verb, c[hoi].object)

    # annotation order: small, large, medium, and a tie with the medium one
    pairs = [pair(0, (10, 10, 30, 30), (20, 20, 40, 40)),
             pair(1, (0, 0, 200, 150), (50, 50, 150, 140)),
             pair(4, (10, 10, 90, 90), (40, 40, 80, 80)),
             pair(7, (100, 10, 180, 90), (130, 40, 170, 80))]
    record = ImageRecord("HICO_test2015_00000001.jpg", 200, 150, pairs)
    layout = layout_scene(record, vocab)
    expected = [vocab.action_phrase(c[h].verb) for h in (1, 4, 7, 0)]
    assert [i.action for i in layout.interactions] == expected
    # the same record as a training crop (the whole image squashed, so every pair survives)
    geometry = CropGeometry(200, 150, 512, 512 / 200, 512 / 150, 0, 0)
    scene = training_scene(record, vocab, geometry)
    assert [i.action for i in scene.interactions] == expected
    for trained, drawn in zip(scene.interactions, layout.interactions):
        assert trained.subject_box == pytest.approx(drawn.subject_box)
    # over 30 pairs: the 30 largest, still in that order
    many = ImageRecord("x.jpg", 200, 150, [pair(0, (0, 0, 5 + k, 5 + k), (0, 0, 5, 5)) for k in range(40)])
    kept = layout_scene(many, vocab).interactions
    assert len(kept) == 30 and kept[0].subject_box[2] == 44 / 200 and kept[-1].subject_box[2] == 15 / 200
