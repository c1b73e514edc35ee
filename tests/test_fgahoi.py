"""FGAHOI behind the detector interface: key layout, checkpoint container, bad files, post-processing, registry.

Parity with the official code (same checkpoint file, raw outputs and triplets) is checked outside the repository
(the official code is not vendored); these tests pin what can be checked here.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from test_qpic import small_vocabulary  # 4 COCO objects, 3 verbs, 6 classes

from interactdiffusion.evaluation.detectors import (
    DetectorWeightsError,
    HOIDetector,
    MissingDetectorWeightsError,
    available_detectors,
    build_detector,
)
from interactdiffusion.evaluation.detectors.fgahoi import (
    FGAHOI,
    FGAHOIConfig,
    FGAHOIOutputs,
    fgahoi_postprocess,
    load_fgahoi,
    save_fgahoi_checkpoint,
)
from interactdiffusion.evaluation.detectors.fgahoi.anchors import multi_scale_samples
from interactdiffusion.evaluation.detectors.fgahoi.deformable_attention import ms_deform_attn
from interactdiffusion.evaluation.detectors.fgahoi.detector import randomize_
from interactdiffusion.evaluation.detectors.fgahoi.swin import SwinShape
from interactdiffusion.evaluation.detectors.hoi_triplets import hoi_lookup_table
from interactdiffusion.evaluation.detectors.qpic import QPIC, QPICConfig, load_qpic

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY_SWIN = SwinShape(16, (2, 2, 2, 2), (1, 2, 2, 4), 4)
TINY = dict(hidden_dim=32, nheads=2, enc_layers=1, dec_layers=2, dim_feedforward=64, num_queries=12, swin=TINY_SWIN)


# -- key layout ----------------------------------------------------------------------------------------------
def test_swin_t_model_has_fgahoi_checkpoint_layout():
    """The 782 keys of FGAHOI's Swin-T HICO-DET checkpoint (names and shapes as its code saves them)."""
    with torch.device("meta"):
        state = FGAHOI(FGAHOIConfig()).state_dict()
    assert len(state) == 782
    expected = {
        "query_embed.weight": (300, 512),
        "transformer.level_embed": (3, 256),
        "transformer.reference_points.weight": (2, 256),
        "input_proj.0.0.weight": (256, 192, 1, 1),
        "input_proj.2.1.weight": (256,),
        "backbone.0.body.patch_embed.proj.weight": (96, 3, 4, 4),
        "backbone.0.body.layers.2.blocks.5.attn.relative_position_bias_table": (169, 12),
        "backbone.0.body.layers.0.blocks.0.attn.relative_position_index": (49, 49),
        "backbone.0.body.layers.2.downsample.reduction.weight": (768, 1536),
        "backbone.0.body.norm3.weight": (768,),
        "transformer.encoder.layers.5.self_attn.sampling_offsets.weight": (192, 256),
        "transformer.decoder.layers.5.cross_attn.multi_attn_spatial.in_proj_weight": (768, 256),
        "transformer.decoder.layers.0.cross_attn.kv_spital.weight": (512, 256),
        "transformer.decoder.layers.0.cross_attn.norm_task.weight": (256,),
        "transformer.decoder.layers.3.cross_attn.fcV2.2.weight": (1024, 256),
        "class_embed.5.weight": (80, 256),
        "verb_class_embed.0.weight": (117, 256),
        "hoi_bbox_embed.3.layers.2.weight": (4, 256),
        "offset.0.0.weight": (192, 1, 11, 11),
        "offset.2.1.norm.weight": (768,),
        "offset.1.3.weight": (2, 384, 1, 1),
    }
    assert {k: tuple(state[k].shape) for k in expected} == expected
    assert "backbone.0.body.norm0.weight" not in state and "transformer.decoder.norm.weight" not in state


def test_swin_l_shape_on_meta_device():
    with torch.device("meta"):
        state = FGAHOI(FGAHOIConfig(backbone="swin_large")).state_dict()
    assert state["input_proj.0.0.weight"].shape == (256, 384, 1, 1)
    assert state["backbone.0.body.layers.3.blocks.0.attn.relative_position_bias_table"].shape == (169, 48)
    assert sum(1 for k in state if k.startswith("backbone.0.body.layers.2.blocks.") and k.endswith("qkv.weight")) == 18


def _fgahoi_layout_checkpoint(path: Path, config: FGAHOIConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """FGAHOI's container filled with random tensors under the model's key names and shapes (aliased heads
    share one tensor, as FGAHOI saves them); args as FGAHOI's main.py stores them (plain Namespace)."""
    with torch.device("meta"):
        layout = FGAHOI(config).state_dict(keep_vars=True)
    g = torch.Generator().manual_seed(seed)
    state, shared = {}, {}
    for key, tensor in layout.items():
        if key.endswith("relative_position_index"):
            size = config.swin_shape.window_size
            state[key] = torch.randint(0, (2 * size - 1) ** 2, tuple(tensor.shape), generator=g)
            continue
        head, _, rest = key.partition(".")
        alias = f"{head}.*.{rest.split('.', 1)[1]}" if head.endswith("_embed") and head != "query_embed" else key
        if alias not in shared:
            shared[alias] = torch.randn(tuple(tensor.shape), generator=g)
        state[key] = shared[alias].clone()
    args = config.to_args()
    args.lr, args.epochs, args.output_dir, args.pretrained = 1e-4, 150, "logs", ""
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]},
                "lr_scheduler": {"step_size": 120, "last_epoch": 149}, "epoch": 149, "args": args}, path)
    return state


def test_checkpoint_with_fgahoi_layout_loads_strictly(tmp_path):
    config = FGAHOIConfig(**TINY)
    path = tmp_path / "fgahoi_tiny.pth"
    state = _fgahoi_layout_checkpoint(path, config)
    model = load_fgahoi(path)
    assert model.config.swin == TINY_SWIN and model.config.dec_layers == 2
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_saved_model_roundtrips_and_gives_same_outputs(tmp_path):
    torch.manual_seed(0)
    model = randomize_(FGAHOI(FGAHOIConfig(**TINY, no_obj=True))).eval()
    path = tmp_path / "model.pth"
    save_fgahoi_checkpoint(model, path)
    again = load_fgahoi(path)
    assert again.config.no_obj and again.config.num_obj_classes == 80
    pixels, mask = torch.randn(2, 3, 70, 90), torch.zeros(2, 70, 90, dtype=torch.bool)
    mask[1, 50:, :] = True
    with torch.no_grad():
        a, b = model(pixels, mask), again(pixels, mask)
    assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(a, b)), [(x - y).abs().max() for x, y in zip(a, b)]
    assert a.obj_logits.shape == (2, 12, 81) and a.sub_boxes.shape == (2, 12, 4)


def test_differing_aliased_heads_are_refused(tmp_path):
    path = tmp_path / "refined.pth"
    state = _fgahoi_layout_checkpoint(path, FGAHOIConfig(**TINY))
    state["class_embed.1.weight"] = state["class_embed.1.weight"] + 1
    torch.save({"model": state, "args": FGAHOIConfig(**TINY).to_args()}, path)
    with pytest.raises(DetectorWeightsError, match=r"class_embed\.1\.weight differs"):
        load_fgahoi(path)


# -- bad input -------------------------------------------------------------------------------------------------
def test_missing_weights_name_the_file_and_where_they_are_published(tmp_path):
    missing = tmp_path / "fgahoi_swin_tiny_hico.pth"
    with pytest.raises(MissingDetectorWeightsError) as err:
        load_fgahoi(missing, "swin_tiny")
    assert str(missing) in str(err.value)
    assert "1WzBZ-jEy7kA02ynXQdugnF44e7cTNnD9" in str(err.value) and "xiaomabufei/FGAHOI" in str(err.value)


def test_qpic_checkpoint_passed_as_fgahoi_and_the_reverse(tmp_path):
    qpic_path = tmp_path / "qpic.pth"
    torch.manual_seed(0)
    qpic_config = QPICConfig(backbone="resnet18", hidden_dim=32, nheads=2, enc_layers=1, dec_layers=1,
                             dim_feedforward=64, num_queries=4)
    torch.save({"model": QPIC(qpic_config).state_dict(), "args": qpic_config.to_args()}, qpic_path)  # QPIC's container
    with pytest.raises(DetectorWeightsError, match="not an FGAHOI") as err:
        load_fgahoi(qpic_path)
    assert str(qpic_path) in str(err.value) and "detector=qpic" in str(err.value)
    fgahoi_path = tmp_path / "fgahoi.pth"
    _fgahoi_layout_checkpoint(fgahoi_path, FGAHOIConfig(**TINY))
    with pytest.raises(DetectorWeightsError, match="not a QPIC") as err:
        load_qpic(fgahoi_path)
    assert str(fgahoi_path) in str(err.value)


def test_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "fgahoi.pth"
    _fgahoi_layout_checkpoint(path, FGAHOIConfig(**TINY))
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DetectorWeightsError, match="cannot read") as err:
        load_fgahoi(path)
    assert str(path) in str(err.value)


class _Payload:
    """Unpickling this would create a file: the loader must refuse before it runs."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_foreign_pickled_global_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"query_embed.weight": torch.zeros(1)}, "args": argparse.Namespace(),
                "extra": _Payload(marker)}, path)
    with pytest.raises(DetectorWeightsError, match="refusing to load") as err:
        load_fgahoi(path)
    assert str(path) in str(err.value) and "mkdir" in str(err.value)
    assert not marker.exists()


# -- the pieces -----------------------------------------------------------------------------------------------
def _textbook_ms_deform_attn(value, shapes, locations, weights):
    """Deformable DETR's formula written out: per level and head, sample then weight and sum everything."""
    b, _, heads, dim = value.shape
    q = locations.shape[1]
    out = torch.zeros(b, q, heads, dim)
    start = 0
    for level, (h, w) in enumerate(shapes):
        for m in range(heads):
            v = value[:, start : start + h * w, m].transpose(1, 2).reshape(b, dim, h, w)
            grid = 2 * locations[:, :, m, level] - 1  # [B, Q, P, 2]
            sampled = F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            out[:, :, m] += (sampled * weights[:, None, :, m, level]).sum(-1).transpose(1, 2)
        start += h * w
    return out.flatten(2)


def test_deformable_attention_matches_the_textbook_formula():
    g = torch.Generator().manual_seed(0)
    shapes = [(6, 9), (3, 5), (2, 2)]
    value = torch.randn(2, sum(h * w for h, w in shapes), 4, 8, generator=g)
    locations = torch.rand(2, 7, 4, 3, 5, 2, generator=g) * 1.4 - 0.2  # some outside the map
    weights = torch.rand(2, 7, 4, 3, 5, generator=g)
    got = ms_deform_attn(value, shapes, locations, weights)
    assert torch.allclose(got, _textbook_ms_deform_attn(value, shapes, locations, weights), atol=1e-5)


def test_multi_scale_sampling_steps_x_by_height_and_y_by_width():
    """FGAHOI's quirk: on an H×W map the s×s grid steps 2/H along x and 2/W along y (x-major order)."""
    h, w = 4, 8
    # channel 0 = column index, channel 1 = row index, so a sample at a pixel centre reads its coordinates
    cols = torch.arange(w, dtype=torch.float32).expand(h, w)
    rows = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    memory = torch.stack((cols, rows), -1).reshape(1, h * w, 2)
    ref = torch.tensor([[[[4.5 / w, 1.5 / h]]]])  # pixel centre (4, 1) of level 0
    samples = multi_scale_samples(ref, memory, [(h, w)], [3])[0][0, 0]  # [9, 2]
    # x moves by 2/H in normalised units = W/H pixels = 2 columns; y by 2/W = H/W pixels = half a row
    expected = [(4 + 2 * i, 1 + 0.5 * j) for i in (-1, 0, 1) for j in (-1, 0, 1)]
    assert torch.allclose(samples, torch.tensor(expected))


# -- post-processing ----------------------------------------------------------------------------------------
def test_postprocess_by_hand():
    """One query: every (query, class) pair is in the top 100; softmax over 80 classes without background."""
    vocab = small_vocabulary()
    lookup = hoi_lookup_table(vocab, 80)
    bicycle, horse, cup, person = 1, 17, 41, 0  # COCO-80 indices
    logits = torch.zeros(1, 1, 80)
    logits[0, 0, bicycle], logits[0, 0, horse] = math.log(79.0), math.log(79.0 / 2)
    # softmax: bicycle 79 / (79 + 39.5 + 78) , horse 39.5 / 196.5, every other class 1 / 196.5
    z = 79 + 39.5 + 78
    p_bicycle, p_horse, p_other = 79 / z, 39.5 / z, 1 / z
    verb_logits = torch.tensor([[[0.0, math.log(3.0), -math.log(3.0)]]])  # sigmoid: 0.5, 0.75, 0.25
    sub = torch.tensor([[[0.5, 0.5, 0.2, 0.4]]])
    obj = torch.tensor([[[0.05, 0.5, 0.2, 0.2]]])
    outputs = FGAHOIOutputs(logits, verb_logits, sub, obj)
    dets = fgahoi_postprocess(outputs, [(200, 100)], lookup, top_k=None)[0]
    got = [(vocab.classes[d.hoi].verb, vocab.objects[vocab.classes[d.hoi].object], round(d.score, 6)) for d in dets]
    expected = sorted([
        (1, "bicycle", 0.75 * p_bicycle), (0, "bicycle", 0.5 * p_bicycle), (2, "bicycle", 0.25 * p_bicycle),
        (1, "horse", 0.75 * p_horse), (0, "cup", 0.5 * p_other), (0, "person", 0.5 * p_other),
    ], key=lambda t: -t[2])
    assert got == [(v, o, round(s, 6)) for v, o, s in expected]
    assert dets[0].human_box == pytest.approx((80.0, 30.0, 120.0, 70.0))
    assert dets[0].object_box == pytest.approx((-10.0, 40.0, 30.0, 60.0))  # unclamped
    top2 = fgahoi_postprocess(outputs, [(200, 100)], lookup, top_k=2)[0]
    assert [d.hoi for d in top2] == [d.hoi for d in dets[:2]]
    del cup, person


def test_postprocess_no_obj_drops_the_last_column_and_takes_pairs_not_queries():
    vocab = small_vocabulary()
    lookup = hoi_lookup_table(vocab, 80)
    logits = torch.full((1, 60, 81), -10.0)
    logits[:, :, 80] = 10.0  # "no object" wins every softmax but is not a class
    logits[:, 3, 1] = 9.0  # query 3: bicycle
    verb = torch.zeros(1, 60, 3)
    boxes = torch.full((1, 60, 4), 0.5)
    dets = fgahoi_postprocess(FGAHOIOutputs(logits, verb, boxes, boxes), [(10, 10)], lookup, no_obj=True)[0]
    assert vocab.objects[vocab.classes[dets[0].hoi].object] == "bicycle"
    assert len(dets) <= 100


# -- the detector ------------------------------------------------------------------------------------------------
def test_random_fgahoi_through_the_registry_and_the_eval_path():
    from interactdiffusion.evaluation.scoring import build_detector as eval_build_detector
    from interactdiffusion.evaluation.scoring import detect_images

    assert {"fgahoi", "fgahoi_random"} <= set(available_detectors())
    vocab = small_vocabulary()
    cfg = OmegaConf.load(CONFIGS / "detector" / "fgahoi_random.yaml")
    detector = eval_build_detector(cfg, vocab, "cpu")
    assert isinstance(detector, HOIDetector) and detector.name == "fgahoi_random"
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 48, 64), generator=g, dtype=torch.uint8) for _ in range(3)]
    batched = detect_images(detector, images, [(640, 480)] * 3)
    assert [len(d) for d in batched] and all(0 < len(d) <= 100 for d in batched)
    assert all(0 <= d.hoi < vocab.num_classes for image in batched for d in image)
    one = build_detector("fgahoi_random", vocabulary=vocab, device="cpu", batch_size=1, min_size=64, max_size=128)
    single = one.detect(images, [(640, 480)] * 3)
    for a, b in zip(batched, single):
        assert [d.hoi for d in a] == [d.hoi for d in b]
        assert [d.score for d in a] == pytest.approx([d.score for d in b], abs=1e-5)


def test_paper_detector_configs_name_their_weights():
    for name, file, drive in (("fgahoi_swin_t", "fgahoi_swin_tiny_hico.pth", "1WzBZ-jEy7kA02ynXQdugnF44e7cTNnD9"),
                              ("fgahoi_swin_l", "fgahoi_swin_large_hico.pth", "1GTm9vh1D145wJhlZXpDGJMMUnWi-_gM_")):
        text = (CONFIGS / "detector" / f"{name}.yaml").read_text()
        cfg = OmegaConf.create(text)
        assert cfg.kind == "fgahoi" and cfg.name == name and cfg._get_node("weights")._value().endswith(file)
        assert drive in text


def test_training_eval_callback_takes_the_fgahoi_detector_config(tmp_path):
    """``detector@callbacks.hoi_eval.detector=fgahoi_*`` composes; the callback's spec builds an FGAHOI detector
    on the given device, which detects a whole batch (it chunks by its ``batch_size``)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from interactdiffusion.config_path import config_dir
    from interactdiffusion.evaluation.detectors.fgahoi import FGAHOIDetector
    from interactdiffusion.evaluation.scoring import build_detector as eval_build_detector
    from interactdiffusion.utils import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.root_dir={tmp_path}", "callbacks=hoi_eval",
                                          "detector@callbacks.hoi_eval.detector=fgahoi_random"])
    with initialize_config_dir(config_dir(), version_base="1.3"):
        paper = compose("train", overrides=[f"paths.root_dir={tmp_path}", "callbacks=hoi_eval",
                                            "detector@callbacks.hoi_eval.detector=fgahoi_swin_t"])
    assert paper.callbacks.hoi_eval.detector.kind == "fgahoi"
    callback = instantiate(cfg.callbacks.hoi_eval)
    detector = eval_build_detector(callback.detector_spec, small_vocabulary(), "cpu")
    assert isinstance(detector, FGAHOIDetector) and detector.device.type == "cpu"
    images = [torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8) for _ in range(10)]
    assert len(detector.detect(images, [(32, 32)] * 10)) == 10


def test_scale_stored_as_characters_falls_back_to_fgahoi_default(tmp_path):
    """FGAHOI's ``--scale`` is ``type=list``: typed on a command line it is stored as characters; its evaluation
    never reads the stored value (the model comes from the eval command line, default [1, 3, 5])."""
    path = tmp_path / "fgahoi.pth"
    config = FGAHOIConfig(**TINY)
    state = _fgahoi_layout_checkpoint(path, config)
    args = config.to_args()
    args.scale = list("[1,3,5]")
    torch.save({"model": state, "args": args}, path)
    assert load_fgahoi(path).config.scale == (1, 3, 5)
    args.scale = [1, 1, 3]
    torch.save({"model": state, "args": args}, path)
    assert load_fgahoi(path).config.scale == (1, 1, 3)


def test_task_aware_merge_normalises_over_the_queries():
    """FGAHOI's ``F.normalize`` in the task-aware merge runs over dim 1, the queries: a query's update depends on
    the other queries (it would not, normalised over the channels), and each channel's parameters have unit norm
    across the queries."""
    from interactdiffusion.evaluation.detectors.fgahoi.anchors import FineGrainedDeformAttn

    torch.manual_seed(0)
    attn = randomize_(FineGrainedDeformAttn(32, 3, 2, 2)).eval()
    query, merged = torch.randn(1, 5, 32), torch.randn(1, 5, 32)
    with torch.no_grad():
        together = attn.task_aware(query, merged)
        alone = attn.task_aware(query[:, :1], merged[:, :1])
    assert not torch.allclose(together[:, :1], alone, atol=1e-4)
    with torch.no_grad():
        mixed = attn.multi_attn_task(attn.q_task(query).reshape(5, 1, 32),
                                     *attn.kv_task(torch.stack((query, merged), 2)).reshape(5, 2, 2, 32).unbind(2),
                                     need_weights=False)[0].view(1, 5, 32)
        params = F.normalize(attn.fcV2(mixed), dim=1)
    assert torch.allclose(params.norm(dim=1), torch.ones(1, 128), atol=1e-5)
