"""QPIC behind the detector interface: key layout, checkpoint container, pre/post-processing, registry."""

from __future__ import annotations

import argparse
import math
import pathlib
from pathlib import Path

import pytest
import torch
import torchvision
from omegaconf import OmegaConf

from interactdiffusion.evaluation.detectors import (
    DetectorWeightsError,
    HOIDetection,
    HOIDetector,
    MissingDetectorWeightsError,
    available_detectors,
    build_detector,
    register_detector,
)
from interactdiffusion.evaluation.detectors.detr import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    preprocess_images,
    resized_shape,
)
from interactdiffusion.evaluation.detectors.qpic import (
    QPIC,
    QPIC_RELEASE_URL,
    QPICConfig,
    QPICDetector,
    QPICOutputs,
    build_random_qpic_detector,
    hoi_lookup_table,
    load_qpic_checkpoint,
    qpic_postprocess,
)
from interactdiffusion.vocab import COCO_CATEGORIES, HOIClass, HOIVocabulary

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = dict(backbone="resnet18", hidden_dim=32, nheads=2, enc_layers=1, dec_layers=1, dim_feedforward=64, num_queries=12)
COCO80 = [name for _, name in COCO_CATEGORIES]


def small_vocabulary() -> HOIVocabulary:
    """4 COCO objects (alphabetical, as HICO-DET), 3 verbs, 6 classes; most COCO objects absent."""
    objects = ["bicycle", "cup", "horse", "person"]
    verbs = ["hold", "ride", "sit_on"]
    pairs = [("hold", "bicycle"), ("hold", "cup"), ("ride", "bicycle"), ("ride", "horse"), ("sit_on", "bicycle"),
             ("hold", "person")]
    classes = [HOIClass(verbs.index(v), objects.index(o)) for v, o in pairs]
    return HOIVocabulary(objects, verbs, ["holding", "riding", "sitting on"], classes)


def qpic_args(config: QPICConfig) -> argparse.Namespace:
    """What QPIC's main.py stores under 'args': the architecture plus the training options."""
    args = config.to_args()
    vars(args).update(
        lr=1e-4, lr_backbone=1e-5, batch_size=2, weight_decay=1e-4, epochs=150, lr_drop=100, clip_max_norm=0.1,
        frozen_weights=None, masks=False, aux_loss=True, set_cost_class=1.0, eos_coef=0.1,
        hoi_path="data/hico_20160224_det", output_dir="logs", device="cuda", seed=42, resume="", start_epoch=0,
        eval=False, num_workers=2, world_size=1, dist_url="env://", verb_loss_type="focal",
        pretrained="params/detr-r50-pre-hico.pth", dropout=0.1,
    )
    return args


def save_like_qpic(model: QPIC, path: Path, **extra) -> None:
    torch.save({"model": model.state_dict(), "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
                "lr_scheduler": {"step_size": 100, "last_epoch": 149}, "epoch": 149,
                "args": qpic_args(model.config), **extra}, path)


def random_images(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for w, h in sizes]


# -- architecture and checkpoint layout ------------------------------------------------------------------------
def expected_qpic_keys() -> set[str]:
    """The public QPIC-R50 HICO-DET state dict, derived independently of our modules."""
    with torch.device("meta"):
        resnet = torchvision.models.resnet50(weights=None)
    keys = {f"backbone.0.body.{k}" for k in resnet.state_dict()
            if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    attn = ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
    wb = ["weight", "bias"]
    for i in range(6):
        enc = f"transformer.encoder.layers.{i}."
        keys |= {enc + "self_attn." + a for a in attn}
        keys |= {enc + f"{m}.{p}" for m in ("linear1", "linear2", "norm1", "norm2") for p in wb}
        dec = f"transformer.decoder.layers.{i}."
        keys |= {dec + f"{m}." + a for m in ("self_attn", "multihead_attn") for a in attn}
        keys |= {dec + f"{m}.{p}" for m in ("linear1", "linear2", "norm1", "norm2", "norm3") for p in wb}
    keys |= {f"transformer.decoder.norm.{p}" for p in wb}
    keys |= {"query_embed.weight", "input_proj.weight", "input_proj.bias"}
    keys |= {f"{h}.{p}" for h in ("obj_class_embed", "verb_class_embed") for p in wb}
    keys |= {f"{h}.layers.{i}.{p}" for h in ("sub_bbox_embed", "obj_bbox_embed") for i in range(3) for p in wb}
    return keys


def test_default_architecture_has_the_public_qpic_key_layout():
    with torch.device("meta"):
        model = QPIC()
    state = model.state_dict()
    assert set(state) == expected_qpic_keys()
    for key in ("backbone.0.body.conv1.weight", "backbone.0.body.layer1.0.bn1.running_mean",
                "transformer.encoder.layers.0.self_attn.in_proj_weight", "query_embed.weight", "input_proj.weight"):
        assert key in state
    shapes = {"obj_class_embed.weight": (81, 256), "verb_class_embed.weight": (117, 256),
              "query_embed.weight": (100, 256), "input_proj.weight": (256, 2048, 1, 1),
              "sub_bbox_embed.layers.2.weight": (4, 256), "transformer.decoder.layers.5.linear1.weight": (2048, 256),
              "transformer.encoder.layers.0.self_attn.in_proj_weight": (768, 256)}
    assert {k: tuple(state[k].shape) for k in shapes} == shapes
    assert "transformer.encoder.norm.weight" not in state  # post-norm: no final encoder norm


def test_frozen_batchnorm_and_no_pretrained_download(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    model = QPIC(QPICConfig(**TINY))
    assert isinstance(model.backbone[0].body.bn1, torchvision.ops.FrozenBatchNorm2d)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_random_checkpoint_in_qpic_container_loads_and_detects(tmp_path):
    vocab = small_vocabulary()
    torch.manual_seed(1)
    model = QPIC(QPICConfig(**TINY, num_verb_classes=3))
    with torch.no_grad():  # untrained queries would mostly pick COCO objects the small vocabulary lacks
        for name in vocab.objects:
            model.obj_class_embed.bias[COCO80.index(name)] += 5.0
    path = tmp_path / "qpic_random.pth"
    save_like_qpic(model, path)

    state, config = load_qpic_checkpoint(path)  # weights_only + Namespace allowed
    assert config == model.config and set(state) == set(model.state_dict())

    detector = build_detector("qpic", vocabulary=vocab, weights=str(path), min_size=32, max_size=48, top_k=25)
    assert isinstance(detector, HOIDetector) and detector.name == "qpic"
    reference = QPICDetector(model, vocab, min_size=32, max_size=48, top_k=25)

    images = random_images([(40, 30), (32, 32)])
    sizes = [(640, 480), (512, 512)]  # score in the original layout's pixels, not the input's
    detections = detector.detect(images, sizes)
    assert detections == reference.detect(images, sizes)  # the file's weights are what runs
    assert len(detections) == 2
    valid_hois = set(range(vocab.num_classes))
    for dets, (w, h) in zip(detections, sizes):
        assert 0 < len(dets) <= 25
        assert all(isinstance(d, HOIDetection) and d.hoi in valid_hois for d in dets)
        scores = [d.score for d in dets]
        assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
        for d in dets:
            for x1, y1, x2, y2 in (d.human_box, d.object_box):
                assert x1 <= x2 and y1 <= y2
                assert -0.5 * w <= x1 and x2 <= 1.5 * w and -0.5 * h <= y1 and y2 <= 1.5 * h
        centres = [(b[0] + b[2]) / 2 / w for d in dets for b in (d.human_box, d.object_box)]
        assert all(0.0 <= c <= 1.0 for c in centres)  # sigmoid centres, scaled to this image


def test_checkpoint_without_args_infers_the_architecture(tmp_path):
    model = QPIC(QPICConfig(**{**TINY, "nheads": 8}, num_verb_classes=3))
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    _, config = load_qpic_checkpoint(tmp_path / "bare.pth")
    assert config == model.config


def test_checkpoint_with_another_object_type_is_refused(tmp_path):
    model = QPIC(QPICConfig(**TINY, num_verb_classes=3))
    path = tmp_path / "evil.pth"
    save_like_qpic(model, path, output=pathlib.PurePosixPath("logs"))
    with pytest.raises(DetectorWeightsError) as err:
        load_qpic_checkpoint(path)
    assert "refusing to load" in str(err.value) and "PurePosixPath" in str(err.value)


def test_missing_weights_name_the_path_and_the_release(tmp_path):
    missing = tmp_path / "weights" / "qpic_resnet50_hico.pth"
    with pytest.raises(MissingDetectorWeightsError) as err:
        build_detector("qpic", vocabulary=small_vocabulary(), weights=str(missing))
    assert isinstance(err.value, FileNotFoundError)
    assert str(missing) in str(err.value) and QPIC_RELEASE_URL in str(err.value)


def test_mismatched_state_dict_is_a_clear_error(tmp_path):
    model = QPIC(QPICConfig(**TINY, num_verb_classes=3))
    state = model.state_dict()
    del state["obj_bbox_embed.layers.2.bias"]
    torch.save({"model": state, "args": qpic_args(model.config)}, tmp_path / "broken.pth")
    with pytest.raises(DetectorWeightsError, match="missing keys"):
        build_detector("qpic", vocabulary=small_vocabulary(), weights=str(tmp_path / "broken.pth"))


def test_verb_count_must_match_the_vocabulary():
    with pytest.raises(ValueError, match="verb classes"):
        QPICDetector(QPIC(QPICConfig(**TINY, num_verb_classes=117)), small_vocabulary())


# -- post-processing -----------------------------------------------------------------------------------------------
def test_hoi_lookup_maps_coco80_through_the_vocabulary():
    vocab = small_vocabulary()
    lookup = hoi_lookup_table(vocab, 80)
    bicycle, horse, dog = COCO80.index("bicycle"), COCO80.index("horse"), COCO80.index("dog")
    ride, sit_on = 1, 2
    assert lookup.shape == (3, 80)
    assert lookup[ride, bicycle] == vocab.hoi_id(ride, vocab.object_index("bicycle"))
    assert lookup[ride, horse] == vocab.hoi_id(ride, vocab.object_index("horse"))
    assert lookup[sit_on, horse] == -1  # not a class
    assert (lookup[:, dog] == -1).all()  # object absent from the vocabulary
    assert int((lookup >= 0).sum()) == vocab.num_classes


def test_postprocess_on_hand_made_logits():
    vocab = small_vocabulary()
    hold, ride, sit_on = 0, 1, 2
    c = {name: COCO80.index(name) for name in ("bicycle", "horse", "cup", "dog")}
    obj_logits = torch.full((1, 4, 81), -10.0)
    obj_logits[0, 0, c["bicycle"]] = 3.0
    obj_logits[0, 1, c["horse"]] = 2.0
    obj_logits[0, 1, 80] = 9.0  # no-object is largest: QPIC still takes the best real class
    obj_logits[0, 2, c["dog"]] = 5.0  # an object the vocabulary lacks: no detections
    obj_logits[0, 3, c["cup"]] = 1.0
    verb_logits = torch.tensor([[[0.0, 2.0, -1.0], [1.0, 3.0, 4.0], [5.0, 5.0, 5.0], [-2.0, 0.5, 1.0]]])
    sub_boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.25, 0.25, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.1, 0.2, 0.1, 0.2]]])
    obj_boxes = sub_boxes.flip(1)
    outputs = QPICOutputs(obj_logits, verb_logits, sub_boxes, obj_boxes)
    detections = qpic_postprocess(outputs, [(200, 100)], hoi_lookup_table(vocab, 80), top_k=None)[0]

    prob = obj_logits.softmax(-1)[0]
    obj_score = [prob[0, c["bicycle"]], prob[1, c["horse"]], None, prob[3, c["cup"]]]
    sig = verb_logits[0].sigmoid()
    b, hr, cu = (vocab.object_index(n) for n in ("bicycle", "horse", "cup"))
    expected = [  # (query, hoi, score): valid (verb, object) pairs only
        (0, vocab.hoi_id(hold, b), sig[0, hold] * obj_score[0]),
        (0, vocab.hoi_id(ride, b), sig[0, ride] * obj_score[0]),
        (0, vocab.hoi_id(sit_on, b), sig[0, sit_on] * obj_score[0]),
        (1, vocab.hoi_id(ride, hr), sig[1, ride] * obj_score[1]),
        (3, vocab.hoi_id(hold, cu), sig[3, hold] * obj_score[3]),
    ]
    expected.sort(key=lambda e: -float(e[2]))
    assert [d.hoi for d in detections] == [e[1] for e in expected]
    assert [d.score for d in detections] == pytest.approx([float(e[2]) for e in expected], rel=1e-6)

    by_hoi = {d.hoi: d for d in detections}
    first = by_hoi[vocab.hoi_id(ride, b)]  # query 0: cx,cy,w,h = .5,.5,.2,.4 in a 200x100 image
    assert first.human_box == pytest.approx((80.0, 30.0, 120.0, 70.0))
    assert first.object_box == pytest.approx((10.0, 10.0, 30.0, 30.0))  # query 3's box, flipped order

    top2 = qpic_postprocess(outputs, [(200, 100)], hoi_lookup_table(vocab, 80), top_k=2)[0]
    assert top2 == detections[:2]


def test_postprocess_ties_keep_query_then_verb_order():
    vocab = small_vocabulary()
    obj_logits = torch.full((1, 2, 81), -10.0)
    obj_logits[0, :, COCO80.index("bicycle")] = 5.0
    outputs = QPICOutputs(obj_logits, torch.zeros(1, 2, 3), torch.full((1, 2, 4), 0.5), torch.full((1, 2, 4), 0.5))
    dets = qpic_postprocess(outputs, [(10, 10)], hoi_lookup_table(vocab, 80))[0]
    b = vocab.object_index("bicycle")
    assert [d.hoi for d in dets] == [vocab.hoi_id(v, b) for v in (0, 1, 2)] * 2
    assert len({d.score for d in dets}) == 1 and not math.isnan(dets[0].score)


# -- preprocessing ------------------------------------------------------------------------------------------------
def test_resize_rule_is_detrs():
    assert resized_shape(640, 480) == (800, 1066)
    assert resized_shape(512, 512) == (800, 800)
    assert resized_shape(500, 2000) == (1332, 333)  # the longer side capped at 1333
    assert resized_shape(800, 600, min_size=600) == (600, 800)  # already the right size


def test_preprocess_pads_bottom_right_with_a_mask():
    images = [torch.full((3, 30, 40), 255, dtype=torch.uint8), torch.zeros((3, 40, 20), dtype=torch.uint8)]
    batch, mask = preprocess_images(images, min_size=30, max_size=None)
    assert batch.shape == (2, 3, 60, 40) and mask.shape == (2, 60, 40)
    assert not mask[0, :30, :40].any() and mask[0, 30:].all()
    assert not mask[1, :, :30].any() and mask[1, :, 30:].all()  # 40x20 (h x w) → 60x30
    white = (1.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(batch[0, :, 0, 0], white) and (batch[0, :, 30:] == 0).all()


def test_batch_size_does_not_change_same_size_results():
    vocab = small_vocabulary()
    images = torch.stack(random_images([(32, 32)] * 3, seed=3))
    sizes = [(480, 480)] * 3
    kwargs = dict(min_size=32, max_size=None, top_k=10, **TINY)
    one = build_random_qpic_detector(vocab, batch_size=1, **kwargs).detect(images, sizes)
    three = build_random_qpic_detector(vocab, batch_size=3, **kwargs).detect(images, sizes)
    for a, b in zip(one, three):
        assert [d.hoi for d in a] == [d.hoi for d in b]
        assert [d.score for d in a] == pytest.approx([d.score for d in b], abs=1e-5)


# -- registry and configs -----------------------------------------------------------------------------------------
def test_registry_kinds_import_paths_and_errors():
    vocab = small_vocabulary()
    assert {"qpic", "qpic_random", "random"} <= set(available_detectors())
    det = build_detector("interactdiffusion.evaluation.detectors.qpic:build_random_qpic_detector",
                         vocabulary=vocab, min_size=32, **TINY)
    assert isinstance(det, HOIDetector)
    with pytest.raises(ValueError, match="unknown detector 'nope'.*qpic"):
        build_detector("nope")

    class Constant:
        name = "constant"

        def detect(self, images, sizes):
            return [[HOIDetection((0, 0, 1, 1), (0, 0, 1, 1), 0, 1.0)] for _ in sizes]

    register_detector("constant_test", lambda **kw: Constant())
    assert build_detector("constant_test").detect([], [(1, 1)])[0][0].hoi == 0
    register_detector("broken_test", lambda **kw: object())
    with pytest.raises(TypeError, match="HOIDetector"):
        build_detector("broken_test")


def test_detector_configs_instantiate(tmp_path):
    from hydra.utils import instantiate

    vocab = small_vocabulary()
    paths = OmegaConf.create({"paths": {"weights_dir": str(tmp_path)}})
    random_cfg = OmegaConf.merge(paths, {"detector": OmegaConf.load(CONFIGS / "detector" / "random.yaml")})
    # partial: Hydra would turn a dataclass keyword (the vocabulary) into a config node
    detector = instantiate(random_cfg.detector, _partial_=True)(vocabulary=vocab, device="cpu")
    dets = detector.detect(random_images([(40, 30)]), [(400, 300)])
    assert detector.name == "qpic_random" and len(dets) == 1

    qpic_cfg = OmegaConf.merge(paths, {"detector": OmegaConf.load(CONFIGS / "detector" / "qpic.yaml")})
    with pytest.raises(MissingDetectorWeightsError, match="qpic_resnet50_hico.pth"):
        instantiate(qpic_cfg.detector, _partial_=True)(vocabulary=vocab, device="cpu")
