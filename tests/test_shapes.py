"""HOI-Shapes: the world, the generator on disk, the analytic detector through the real evaluator, the CLI."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from interactdiffusion.data.annotations import load_annotations
from interactdiffusion.evaluation.detectors.base import HOIDetector
from interactdiffusion.shapes.dataset import ensure_hoi_shapes, write_hoi_shapes
from interactdiffusion.shapes.detector import ShapesDetector, evaluate_detector
from interactdiffusion.shapes.layout import (
    Action,
    Entity,
    LayoutSampler,
    ShapesLayout,
    between_int_box,
    check_layout,
)
from interactdiffusion.shapes.render import SHAPES, Renderer, shape_mask
from interactdiffusion.shapes.world import CLASS_FREQUENCIES, ShapesWorld, WorldConfig
from interactdiffusion.vocab import COCO_CATEGORIES, RARE_THRESHOLD

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# (object, verb) pairs of the real HICO-DET class list that HOI-Shapes may use.
HICO_PAIRS = {
    ("cup", "carry"), ("cup", "hold"), ("cup", "inspect"), ("frisbee", "catch"), ("frisbee", "hold"),
    ("frisbee", "throw"), ("kite", "carry"), ("kite", "fly"), ("kite", "hold"), ("kite", "inspect"),
    ("skateboard", "carry"), ("skateboard", "hold"), ("skateboard", "ride"), ("skateboard", "inspect"),
    ("sports_ball", "carry"), ("sports_ball", "catch"), ("sports_ball", "hold"), ("sports_ball", "inspect"),
    ("sports_ball", "kick"), ("sports_ball", "throw"), ("umbrella", "carry"), ("umbrella", "hold"),
}


def key(record):
    return (record.file_name, record.width, record.height,
            sorted((p.human_box, p.object_box, p.hoi, p.verb, p.object) for p in record.pairs))


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """A small HOI-Shapes on disk, shared by the read-only tests of this module."""
    return write_hoi_shapes(tmp_path_factory.mktemp("shapes") / "hoi-shapes", seed=3, num_train=200, num_test=200)


# -- the world ---------------------------------------------------------------------------------------
def test_vocabulary_is_a_slice_of_hico_det():
    world = ShapesWorld()
    vocab = world.vocabulary()
    assert {(vocab.objects[c.object], vocab.verbs[c.verb]) for c in vocab.classes} <= HICO_PAIRS
    coco = {name for _, name in COCO_CATEGORIES}
    assert set(vocab.objects) <= coco and "person" not in vocab.objects
    assert all(ing.endswith("ing") for ing in vocab.verb_ing)
    # official order: objects alphabetical, then verbs
    names = [(vocab.objects[c.object], vocab.verbs[c.verb]) for c in vocab.classes]
    assert names == sorted(names) and vocab.num_classes == len(CLASS_FREQUENCIES)
    # every kind and verb has its own colour
    colors = [c for _, _, c in world.palette()]
    assert len(set(colors)) == len(colors) == 1 + vocab.num_objects + vocab.num_verbs


def test_long_tail_has_rare_classes_at_the_default_size():
    """Class draws alone (no geometry): the default 6,000 training images leave some classes rare."""
    world = ShapesWorld()
    sampler = LayoutSampler(world, 0, "train")
    counts = dict.fromkeys(world.class_pairs, 0)
    for i in range(6000):
        rng = sampler.rng(i)
        k = rng.choices((1, 2, 3), weights=world.config.interactions_per_image)[0]
        for pair in sampler.sample_classes(rng, k):
            counts[pair] += 1
    rare = [p for p, n in counts.items() if n < RARE_THRESHOLD]
    assert 3 <= len(rare) <= 10
    assert max(counts.values()) > 100 * max(1, min(counts.values()))


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_shape_fills_its_box_in_one_piece(shape):
    from scipy import ndimage

    for w in range(5, 24):
        for h in range(5, 24):
            mask = shape_mask(shape, w, h)
            assert mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any(), (shape, w, h)
            assert ndimage.label(mask, structure=np.ones((3, 3)))[1] == 1, (shape, w, h)


def test_between_box_matches_the_model():
    from interactdiffusion.models.grounding import between_box

    rng = random.Random(0)
    for _ in range(200):
        a = sorted(rng.sample(range(33), 2)), sorted(rng.sample(range(33), 2))
        b = sorted(rng.sample(range(33), 2)), sorted(rng.sample(range(33), 2))
        box_a = (a[0][0], a[1][0], a[0][1], a[1][1])
        box_b = (b[0][0], b[1][0], b[0][1], b[1][1])
        expected = between_box(torch.tensor([box_a], dtype=torch.float64), torch.tensor([box_b], dtype=torch.float64))
        assert list(between_int_box(box_a, box_b)) == expected[0].tolist()


@pytest.mark.parametrize("size", [32, 48])
def test_sampled_scenes_follow_every_rule(size):
    world = ShapesWorld(WorldConfig(size=size))
    for split in ("train", "test"):
        sampler = LayoutSampler(world, 7, split)
        layouts = [sampler.sample(i) for i in range(150)]
        for layout in layouts:
            assert check_layout(layout, world) == []
            persons = [e for e in layout.entities if e.kind == "person"]
            assert len(persons) >= 2 and 1 <= len(layout.actions) <= 3
        # several interactions per image, often two with the same object class (caption alone is ambiguous)
        multi = [lay for lay in layouts if len(lay.actions) > 1]
        same = [lay for lay in multi
                if len({lay.entities[a.object].kind for a in lay.actions}) < len(lay.actions)]
        assert len(multi) > 50 and len(same) > 10


def test_the_rules_can_fail():
    world = ShapesWorld()
    person, ball, person2 = Entity("person", (2, 4, 9, 18)), Entity("sports_ball", (14, 6, 21, 13)), Entity("person", (22, 4, 29, 18))
    ok = ShapesLayout(32, (person, ball, person2), (Action("kick", 0, 1),))
    assert check_layout(ok, world) == []
    thin = ShapesLayout(32, (person, Entity("sports_ball", (11, 6, 18, 13)), person2), (Action("kick", 0, 1),))
    assert any("too thin" in p for p in check_layout(thin, world))
    inside = ShapesLayout(32, (person, ball, person2, Entity("cup", (10, 7, 13, 12))), (Action("kick", 0, 1),))
    assert any("bar overlaps entity 3" in p for p in check_layout(inside, world))
    # person - ball - cup - person in a row: the kick bar fills a third of the first person's between box
    # with the cup, which that person does not interact with
    row = ShapesLayout(32, (Entity("person", (0, 4, 6, 18)), Entity("sports_ball", (11, 6, 16, 13)),
                            Entity("cup", (19, 6, 24, 13)), Entity("person", (28, 4, 32, 18))),
                       (Action("kick", 0, 1), Action("hold", 3, 2)))
    assert check_layout(row, world) == ["a non-interacting pair's between box is covered by a bar"]


def test_rendering_draws_entities_in_their_boxes_and_bars_in_between():
    world = ShapesWorld()
    renderer = Renderer(world)
    layout = LayoutSampler(world, 0, "test").sample(5)
    labels, _ = renderer.label_map(layout)
    for entity in layout.entities:
        index = renderer.index[("entity", entity.kind)]
        x0, y0, x1, y1 = entity.box
        inside = labels[y0:y1, x0:x1] == index
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
    for action in layout.actions:
        x0, y0, x1, y1 = layout.between(action)
        assert (labels[y0:y1, x0:x1] == renderer.index[("verb", action.verb)]).all()


# -- the data set on disk --------------------------------------------------------------------------
def test_generation_is_deterministic_to_the_byte(tmp_path):
    one = write_hoi_shapes(tmp_path / "a", seed=11, num_train=40, num_test=20, workers=1)
    two = write_hoi_shapes(tmp_path / "b", seed=11, num_train=40, num_test=20, workers=2)
    files = sorted(p.relative_to(one.root) for p in one.root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two.root) for p in two.root.rglob("*") if p.is_file())
    assert len(files) == 40 + 20 + 5
    for name in files:
        assert (one.root / name).read_bytes() == (two.root / name).read_bytes(), name
    other = write_hoi_shapes(tmp_path / "c", seed=12, num_train=40, num_test=20)
    assert (other.root / "anno_bbox.mat").read_bytes() != (one.root / "anno_bbox.mat").read_bytes()


def test_files_parse_with_the_hico_det_parsers(shapes):
    for split, mine in (("train", shapes.train_records), ("test", shapes.test_records)):
        from_mat = load_annotations(shapes.anno_bbox_mat, split, cache_dir=False)
        from_json = load_annotations(shapes.root / f"instances_{split}2015.json", split, cache_dir=False)
        for parsed in (from_mat, from_json):
            assert [key(r) for r in parsed.records] == [key(r) for r in mine]
            assert parsed.vocab.to_dict() == shapes.vocab.to_dict()
            assert parsed.skipped == {}
    vocab = load_annotations(shapes.anno_bbox_mat, "test", cache_dir=False).vocab
    assert vocab.rare_mask().any() and (~vocab.rare_mask()).any()
    image_dir = shapes.root / "images" / "test2015"
    for record in shapes.test_records[:20]:
        with Image.open(image_dir / record.file_name) as im:
            assert im.size == (32, 32) and im.mode == "RGB"
    assert shapes.stats["test"]["images"] == 200 and shapes.stats["classes"] == 22
    assert shapes.stats["test"]["min_pairs_in_a_class"] >= 1  # the first test scenes hold one class each


def test_ensure_regenerates_only_when_the_arguments_change(tmp_path):
    root = tmp_path / "hoi-shapes"
    ensure_hoi_shapes(root, num_train=10, num_test=5, workers=1)
    stamp = (root / "anno_bbox.mat").stat().st_mtime_ns
    ensure_hoi_shapes(root, num_train=10, num_test=5, workers=1)
    assert (root / "anno_bbox.mat").stat().st_mtime_ns == stamp
    ensure_hoi_shapes(root, num_train=12, num_test=5, workers=1)
    assert len(load_annotations(root / "anno_bbox.mat", "train", cache_dir=False).records) == 12


def test_datamodule_config_generates_and_loads(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    overrides = ["data=shapes", f"paths.data_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}",
                 "data.shapes.num_train=40", "data.shapes.num_test=10", "data.batch_size=4"]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert (tmp_path / "hoi-shapes" / "anno_bbox.mat").is_file()
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["pixel_values"].shape == (4, 3, 32, 32)
    assert datamodule.vocab.num_classes == 22
    assert "holding" in datamodule.phrase_index.phrases or "kicking" in datamodule.phrase_index.phrases


# -- the analytic detector -------------------------------------------------------------------------
def test_detector_gets_full_marks_on_real_test_images_through_the_real_evaluator(shapes):
    detector = ShapesDetector(shapes.vocabulary_json)
    assert isinstance(detector, HOIDetector)
    for protocol in ("official", "fgahoi"):
        results = evaluate_detector(shapes.root, detector, protocol=protocol)
        for setting in ("default", "known_object"):
            for split in ("full", "rare", "non_rare"):
                assert results[setting][split] >= 95.0, (protocol, setting, split, results[setting])


def degrade(image: np.ndarray, rng: np.random.Generator, blur: float, noise: float, shift: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    x = gaussian_filter(image.astype(np.float32), sigma=(blur, blur, 0))
    x = x + rng.normal(0, noise, x.shape) + rng.uniform(-shift, shift, 3)
    return np.clip(x, 0, 255).astype(np.uint8)


def test_detector_tolerates_blur_noise_and_colour_shifts(shapes):
    """What generated images look like at best: soft edges, noisy and slightly off colours."""
    from interactdiffusion.evaluation.hoi_map import HOIEvaluator

    parsed = load_annotations(shapes.anno_bbox_mat, "test", cache_dir=False)
    detector = ShapesDetector(parsed.vocab)
    rng = np.random.default_rng(0)
    images = []
    for record in parsed.records:
        with Image.open(shapes.root / "images" / "test2015" / record.file_name) as im:
            images.append(degrade(np.asarray(im.convert("RGB")), rng, blur=0.7, noise=8.0, shift=15.0))
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    detections = detector.detect(batch, [(r.width, r.height) for r in parsed.records])
    results = HOIEvaluator(parsed.records, parsed.vocab, "official").evaluate(detections)
    assert results["default"]["full"] >= 95.0
    # the same image upscaled (a generator run at twice the resolution) is read at the GT's scale
    big = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).repeat_interleave(2, 2).repeat_interleave(2, 3)
    detections_big = detector.detect(list(big), [(r.width, r.height) for r in parsed.records])
    results_big = HOIEvaluator(parsed.records, parsed.vocab, "official").evaluate(detections_big)
    assert results_big["default"]["full"] >= 95.0


def test_detector_reads_nothing_from_a_blank_or_caption_only_image(shapes):
    detector = ShapesDetector(shapes.vocabulary_json)
    blank = torch.full((3, 32, 32), 240, dtype=torch.uint8)
    assert detector.detect([blank], [(32, 32)]) == [[]]
    # entities without bars: persons and objects but no interaction
    world = ShapesWorld()
    layout = LayoutSampler(world, 0, "test").sample(0)
    no_actions = ShapesLayout(layout.size, layout.entities, ())
    image = Renderer(world).render(no_actions, np.random.default_rng(0))
    assert detector.detect([torch.from_numpy(image).permute(2, 0, 1)], [(32, 32)]) == [[]]
    with pytest.raises(ValueError):
        detector.detect([blank.float()], [(32, 32)])


def test_detector_config_builds_as_the_eval_command_does(shapes):
    from omegaconf import OmegaConf

    from interactdiffusion.evaluation.run import build_detector

    cfg = OmegaConf.load(CONFIGS / "detector" / "shapes.yaml")
    detector = build_detector(cfg, shapes.vocab, "cpu")
    assert isinstance(detector, ShapesDetector) and detector.name == "hoi_shapes"
    record = shapes.test_records[0]
    with Image.open(shapes.root / "images" / "test2015" / record.file_name) as im:
        image = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
    found = detector.detect([image], [(record.width, record.height)])[0]
    assert sorted(d.hoi for d in found) == sorted(p.hoi for p in record.pairs)


# -- the command -------------------------------------------------------------------------------------
def test_make_shapes_cli(tmp_path, capsys):
    from interactdiffusion.cli.data import main

    out = tmp_path / "hoi-shapes"
    code = main(["make-shapes", "--out", str(out), "--num-train", "30", "--num-test", "40", "--seed", "5",
                 "--workers", "1", "--check"])
    assert code == 0
    text = capsys.readouterr().out
    assert "train: 30 images" in text and "test: 40 images" in text and "22 HOI classes" in text
    assert "official protocol: Default 100.00" in text
    assert (out / "anno_bbox.mat").is_file() and (out / "instances_test2015.json").is_file()
    assert len(os.listdir(out / "images" / "train2015")) == 30
