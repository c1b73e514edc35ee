"""The inference pipeline on the tiny backbone (32x32 images, a few steps).

A fresh adapter is the identity (alphas 0), so the module-level backbone gets non-zero alphas and a
random ``position_net``: otherwise every grounding test would pass without the grounding doing anything.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from PIL import Image

from interactdiffusion.atomic import MARKER
from interactdiffusion.models import checkpoints
from interactdiffusion.models.backbone import build_tiny_backbone
from interactdiffusion.models.unet import (
    adapter_named_parameters,
    adapter_state_dict,
    fusers,
    install_grounding,
    is_adapter_key,
)
from interactdiffusion.pipeline import (
    GROUNDING_CONFIG_NAME,
    InteractDiffusionPipeline,
    grounding_config_of,
    load_weights,
    make_scheduler,
)
from interactdiffusion.scene import Interaction, Scene
from interactdiffusion.visualize import ROLE_COLOURS, draw_scene

STEPS = 3
NEGATIVE = "lowres, bad anatomy"


def randomise_adapter(backbone, seed: int = 1) -> None:
    """Non-zero alphas and a random tokenizer, so the interaction module visibly acts."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in adapter_named_parameters(backbone.unet):
            if "alpha" in name:
                param.fill_(0.8)
            elif name.startswith("position_net."):
                param.copy_(torch.randn(param.shape, generator=g) * 0.3)


def grounded_backbone(grounding=None):
    """The tiny backbone (same SD weights whatever the grounding) with a randomised adapter."""
    backbone = build_tiny_backbone(seed=0)
    if grounding:
        install_grounding(backbone.unet, grounding)
    randomise_adapter(backbone)
    return backbone


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP's spinning
    threads slow them down ~10x; one thread keeps this module fast. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pipe():
    pipeline = InteractDiffusionPipeline.from_backbone(grounded_backbone())
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def inter(subject, action, obj, sbox, obox):
    return Interaction(subject, action, obj, sbox, obox)


SCENES = [
    Scene("0", (inter("person", "riding", "horse", (0.1, 0.1, 0.5, 0.9), (0.3, 0.4, 0.9, 0.95)),),
          prompt="a person is riding a horse"),
    Scene("kitchen", (
        inter("person", "holding", "cup", (0.05, 0.1, 0.45, 0.95), (0.35, 0.4, 0.55, 0.6)),
        inter("dog", "chasing", "ball", (0.5, 0.5, 0.9, 0.9), (0.7, 0.1, 0.8, 0.2)),
    )),
    Scene("7", (), prompt="an empty room", seed=1234),
]


def run(pipe, scenes, **kwargs):
    kwargs.setdefault("num_inference_steps", STEPS)
    kwargs.setdefault("interactdiffusion_scheduled_sampling_beta", 1.0)
    kwargs.setdefault("negative_prompt", NEGATIVE)
    kwargs.setdefault("output_type", "np")
    return pipe(scenes, **kwargs).images


# -- determinism: one seed per scene -----------------------------------------------------------------
def test_same_image_for_batch_sizes_1_and_3_and_reversed_order(pipe):
    batched = run(pipe, SCENES, seed=5)
    singles = np.stack([run(pipe, [s], seed=5)[0] for s in SCENES])
    reversed_ = run(pipe, SCENES[::-1], seed=5)[::-1]
    np.testing.assert_allclose(batched, singles, atol=1e-5, rtol=0)
    np.testing.assert_allclose(batched, reversed_, atol=1e-5, rtol=0)
    assert np.abs(batched[0] - batched[1]).max() > 0.05  # different scenes, different images
    assert np.abs(run(pipe, SCENES[:1], seed=6)[0] - batched[0]).max() > 0.05  # the base seed matters


def test_stochastic_scheduler_uses_per_scene_noise_too(pipe):
    original = pipe.scheduler
    pipe.scheduler = make_scheduler("ddim", dict(original.config))
    try:
        batched = run(pipe, SCENES, eta=1.0)
        singles = np.stack([run(pipe, [s], eta=1.0)[0] for s in SCENES])
        deterministic = run(pipe, SCENES[:1], eta=0.0)
    finally:
        pipe.scheduler = original
    np.testing.assert_allclose(batched, singles, atol=1e-5, rtol=0)
    assert np.abs(batched[0] - deterministic[0]).max() > 1e-3  # eta > 0 really drew step noise


def test_seeds_are_reported_and_follow_the_scene(pipe):
    out = pipe(SCENES, num_inference_steps=1, seed=100, output_type="latent")
    assert out.seeds == [s.seed_for(100) for s in SCENES]
    assert out.seeds[2] == 1234  # an explicit scene seed wins


# -- scheduled sampling and guidance --------------------------------------------------------------------
def plain_sd_pipeline(pipe) -> StableDiffusionPipeline:
    """diffusers' own SD pipeline on the same SD weights, with a UNet that has no interaction module."""
    config = {k: v for k, v in pipe.unet.config.items() if not k.startswith("_")}
    config["attention_type"] = "default"
    plain = UNet2DConditionModel.from_config(config)
    sd_weights = {k: v for k, v in pipe.unet.state_dict().items() if not is_adapter_key(k)}
    plain.load_state_dict(sd_weights, strict=True)
    sd = StableDiffusionPipeline(
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        unet=plain.eval(),
        scheduler=make_scheduler("plms", dict(pipe.scheduler.config)),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    sd.set_progress_bar_config(disable=True)
    return sd


def test_beta_zero_is_exactly_the_plain_stable_diffusion_image(pipe):
    scene = SCENES[0]
    seed = scene.seed_for(0)
    reference = plain_sd_pipeline(pipe)(
        scene.caption, height=32, width=32, num_inference_steps=STEPS, guidance_scale=7.5,
        negative_prompt=NEGATIVE, generator=torch.Generator().manual_seed(seed), output_type="np",
    ).images[0]
    ours = run(pipe, [scene], seed=0, interactdiffusion_scheduled_sampling_beta=0.0)[0]
    grounded = run(pipe, [scene], seed=0, interactdiffusion_scheduled_sampling_beta=1.0)[0]
    np.testing.assert_array_equal(ours, reference)
    assert np.abs(grounded - reference).max() > 0.01  # with the module on, the image changes


def test_moving_a_box_changes_the_image(pipe):
    scene = SCENES[0]
    moved = Scene(scene.id, (inter("person", "riding", "horse", (0.5, 0.1, 0.9, 0.9), (0.05, 0.4, 0.6, 0.95)),),
                  prompt=scene.prompt)
    ungrounded = Scene(scene.id, (), prompt=scene.prompt)
    image = run(pipe, [scene])[0]
    # Float noise between equivalent runs is ~1e-6 (see the batch-size test); these are far above it.
    assert np.abs(image - run(pipe, [moved])[0]).max() > 1e-4
    assert np.abs(image - run(pipe, [ungrounded])[0]).max() > 1e-4


class UNetSpy:
    """Records, per UNet call, the batch size, whether grounding tokens were passed and fuser state."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.calls = []
        self.tokenizer_calls = 0

    def __enter__(self):
        def before_unet(module, args, kwargs):
            extra = kwargs.get("cross_attention_kwargs") or {}
            enabled = {f.enabled for f in fusers(module)}
            self.calls.append((args[0].shape[0], "gligen" in extra, enabled))

        def before_tokenizer(module, args, kwargs):
            if kwargs.get("objs") is None:
                self.tokenizer_calls += 1

        self.handles = [
            self.pipe.unet.register_forward_pre_hook(before_unet, with_kwargs=True),
            self.pipe.unet.position_net.register_forward_pre_hook(before_tokenizer, with_kwargs=True),
        ]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def test_guidance_one_skips_the_unconditional_branch(pipe):
    with UNetSpy(pipe) as plain:
        run(pipe, SCENES[:2], guidance_scale=1.0)
    with UNetSpy(pipe) as guided:
        run(pipe, SCENES[:2], guidance_scale=7.5)
    calls = len(pipe.scheduler.timesteps)  # PLMS: STEPS + its warm-up step
    assert [c[0] for c in plain.calls] == [2] * calls
    assert [c[0] for c in guided.calls] == [4] * calls  # both branches in one batched call
    # The tokenizer runs once per call (conditional, + null grounding under guidance), never per step.
    assert plain.tokenizer_calls == 1
    assert guided.tokenizer_calls == 2


def test_fusers_on_for_the_first_int_beta_T_steps_then_restored(pipe):
    with UNetSpy(pipe) as spy:
        run(pipe, SCENES[:1], num_inference_steps=5, interactdiffusion_scheduled_sampling_beta=0.5)
    # PLMS: 5 steps + its warm-up step; int(0.5 * 5) = 2 official steps on = the warm-up iteration + 2
    assert len(spy.calls) == 6
    assert [(c[1], c[2]) for c in spy.calls] == [(True, {True})] * 3 + [(False, {False})] * 3
    assert all(f.enabled for f in fusers(pipe.unet))


def test_fuser_state_is_restored_after_an_exception(pipe):
    def boom(step, t, latents):
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        run(pipe, SCENES[:1], num_inference_steps=4, interactdiffusion_scheduled_sampling_beta=0.25, callback=boom)
    assert all(f.enabled for f in fusers(pipe.unet))
    # ...and a user's own choice (all off) is kept as well.
    for f in fusers(pipe.unet):
        f.enabled = False
    try:
        run(pipe, SCENES[:1], num_inference_steps=1)
        assert not any(f.enabled for f in fusers(pipe.unet))
    finally:
        for f in fusers(pipe.unet):
            f.enabled = True


# -- the official diffusers argument names ------------------------------------------------------------
def test_official_argument_names_give_the_scene_image(pipe):
    scene = SCENES[0]
    i = scene.interactions[0]
    official = pipe(
        prompt=scene.prompt,
        interactdiffusion_subject_phrases=[i.subject],
        interactdiffusion_object_phrases=[i.object],
        interactdiffusion_action_phrases=[i.action],
        interactdiffusion_subject_boxes=[list(i.subject_box)],
        interactdiffusion_object_boxes=[list(i.object_box)],
        interactdiffusion_scheduled_sampling_beta=1.0,
        negative_prompt=NEGATIVE,
        num_inference_steps=STEPS,
        generator=torch.Generator().manual_seed(42),
        output_type="np",
    ).images[0]
    ours = run(pipe, [Scene("0", scene.interactions, prompt=scene.prompt, seed=42)])[0]
    np.testing.assert_allclose(official, ours, atol=1e-6, rtol=0)


def test_official_arguments_per_prompt_with_one_generator_per_image(pipe):
    prompts = [SCENES[0].prompt, SCENES[1].caption]
    per_prompt = [list(SCENES[0].interactions), list(SCENES[1].interactions)]
    official = pipe(
        prompt=prompts,
        interactdiffusion_subject_phrases=[[i.subject for i in x] for x in per_prompt],
        interactdiffusion_object_phrases=[[i.object for i in x] for x in per_prompt],
        interactdiffusion_action_phrases=[[i.action for i in x] for x in per_prompt],
        interactdiffusion_subject_boxes=[[list(i.subject_box) for i in x] for x in per_prompt],
        interactdiffusion_object_boxes=[[list(i.object_box) for i in x] for x in per_prompt],
        interactdiffusion_scheduled_sampling_beta=1.0,
        negative_prompt=NEGATIVE,
        num_inference_steps=STEPS,
        generator=[torch.Generator().manual_seed(s) for s in (3, 4)],
        output_type="np",
    ).images
    scenes = [Scene(str(k), tuple(x), prompt=p, seed=s) for k, (x, p, s) in enumerate(zip(per_prompt, prompts, (3, 4)))]
    np.testing.assert_allclose(official, run(pipe, scenes), atol=1e-5, rtol=0)


def test_official_arguments_are_checked(pipe):
    with pytest.raises(ValueError, match="interactdiffusion_object_boxes"):
        pipe(prompt="x", interactdiffusion_subject_phrases=["person"], interactdiffusion_object_phrases=["cup"],
             interactdiffusion_action_phrases=["holding"], interactdiffusion_subject_boxes=[[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="differ in length"):
        pipe(prompt="x", interactdiffusion_subject_phrases=["person", "dog"], interactdiffusion_object_phrases=["cup"],
             interactdiffusion_action_phrases=["holding"], interactdiffusion_subject_boxes=[[0, 0, 1, 1]],
             interactdiffusion_object_boxes=[[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="either scenes or"):
        pipe(SCENES, prompt="x")


# -- outputs ----------------------------------------------------------------------------------------------
def test_output_types_and_images_per_prompt(pipe):
    pil = pipe(SCENES[:2], num_inference_steps=1).images
    assert len(pil) == 2 and all(isinstance(im, Image.Image) and im.size == (32, 32) for im in pil)
    pt = pipe(SCENES[:2], num_inference_steps=1, output_type="pt").images
    assert pt.shape == (2, 3, 32, 32) and 0 <= pt.min() and pt.max() <= 1
    latent = pipe(SCENES[:2], num_inference_steps=1, output_type="latent").images
    assert latent.shape == (2, 4, 16, 16)
    two = run(pipe, SCENES[:2], num_images_per_prompt=2)
    one = run(pipe, SCENES[:2])
    assert two.shape == (4, 32, 32, 3)
    np.testing.assert_allclose(two[[0, 2]], one, atol=1e-5, rtol=0)  # the first image of a scene is unchanged
    assert np.abs(two[0] - two[1]).max() > 0.01


def test_bf16_runs_and_stays_close_to_fp32():
    fp32 = InteractDiffusionPipeline.from_backbone(grounded_backbone())
    bf16 = InteractDiffusionPipeline.from_backbone(grounded_backbone(), precision="bf16")
    for p in (fp32, bf16):
        p.set_progress_bar_config(disable=True)
    assert bf16.unet.dtype == torch.bfloat16 and bf16.vae.dtype == torch.bfloat16
    a, b = run(fp32, SCENES[:1]), run(bf16, SCENES[:1])
    assert np.isfinite(b).all() and np.abs(a - b).mean() < 0.1


# -- saving and loading ---------------------------------------------------------------------------------
def test_save_pretrained_from_pretrained_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "pipe")
    config = json.loads((tmp_path / "pipe" / "unet" / GROUNDING_CONFIG_NAME).read_text())
    assert config == grounding_config_of(pipe.unet.position_net)
    # Arguments scripts pass for the official release are accepted (and mean nothing locally).
    loaded = InteractDiffusionPipeline.from_pretrained(tmp_path / "pipe", trust_remote_code=True)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.scheduler) is type(pipe.scheduler)
    with pytest.raises(TypeError, match="revision"):
        InteractDiffusionPipeline.from_pretrained(tmp_path / "pipe", revision="main")
    for a, b in ((pipe.unet, loaded.unet), (pipe.vae, loaded.vae), (pipe.text_encoder, loaded.text_encoder)):
        sa, sb = a.state_dict(), b.state_dict()
        assert set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    np.testing.assert_array_equal(run(loaded, SCENES), run(pipe, SCENES))


def test_round_trip_rebuilds_an_ablated_tokenizer(tmp_path):
    grounding = {"use_role_embedding": False, "action_box": "union", "hidden_dim": 64}
    ablated = InteractDiffusionPipeline.from_backbone(grounded_backbone(grounding))
    ablated.set_progress_bar_config(disable=True)
    ablated.save_pretrained(tmp_path)
    loaded = InteractDiffusionPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.unet.position_net.position_embedding is None
    assert grounding_config_of(loaded.unet.position_net)["action_box"] == "union"
    np.testing.assert_array_equal(run(loaded, SCENES[:1]), run(ablated, SCENES[:1]))


def test_from_pretrained_refuses_a_folder_without_the_interaction_module(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    weights = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    from safetensors.torch import load_file, save_file

    save_file({k: v for k, v in load_file(weights).items() if not is_adapter_key(k)}, weights)
    (tmp_path / MARKER).unlink()  # a folder from elsewhere (no completion marker), not a damaged export
    with pytest.raises(ValueError, match="no interaction module"):
        InteractDiffusionPipeline.from_pretrained(tmp_path)


def test_exported_adapter_loads_onto_a_fresh_backbone(pipe, tmp_path):
    path = checkpoints.save_adapter(pipe.unet, tmp_path / "adapter", config={"kind": "interactdiffusion"})
    fresh = InteractDiffusionPipeline.from_backbone(build_tiny_backbone(seed=0), weights=path)
    fresh.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(run(fresh, SCENES), run(pipe, SCENES))


def test_exported_ablation_rebuilds_the_tokenizer_it_was_trained_with(tmp_path):
    grounding = {"use_instance_embedding": False, "hidden_dim": 64}
    ablated = InteractDiffusionPipeline.from_backbone(grounded_backbone(grounding))
    ablated.set_progress_bar_config(disable=True)
    path = checkpoints.save_adapter(ablated.unet, tmp_path / "ablation", config=grounding)
    fresh = InteractDiffusionPipeline.from_backbone(build_tiny_backbone(seed=0), weights=path)
    fresh.set_progress_bar_config(disable=True)
    assert fresh.unet.position_net.interaction_embedding is None
    np.testing.assert_array_equal(run(fresh, SCENES[:1]), run(ablated, SCENES[:1]))


def test_official_full_checkpoint_replaces_unet_vae_and_text_encoder(monkeypatch, tmp_path):
    source = grounded_backbone()
    g = torch.Generator().manual_seed(3)
    vae = {k: torch.randn(v.shape, generator=g) for k, v in source.vae.state_dict().items()}
    text = {k: torch.randn(v.shape, generator=g) for k, v in source.text_encoder.state_dict().items()}
    full = checkpoints.OfficialCheckpoint(unet=source.unet.state_dict(), vae=vae, text_encoder=text)
    seen = []

    def fake_convert(raw, path, unet_config=None, **kwargs):
        seen.append(path)
        return full

    monkeypatch.setattr(checkpoints, "read_checkpoint", lambda path: {"model": {}})
    monkeypatch.setattr(checkpoints, "official_full_from_raw", fake_convert)
    target = build_tiny_backbone(seed=5)
    (tmp_path / "interact-diffusion-v1.pth").write_bytes(b"")
    what = load_weights(target, tmp_path / "interact-diffusion-v1.pth")
    assert seen and "official full checkpoint" in what
    for module, expected in ((target.unet, full.unet), (target.vae, vae), (target.text_encoder, text)):
        state = module.state_dict()
        assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert adapter_state_dict(target.unet).keys() == adapter_state_dict(source.unet).keys()


# -- the layout overlay -----------------------------------------------------------------------------------
def test_draw_scene_marks_subject_object_and_between_box_in_their_colours():
    scene = Scene("v", (inter("person", "kicking", "ball", (0.0, 0.0, 0.5, 0.5), (0.25, 0.25, 1.0, 1.0)),))
    image = Image.new("RGB", (64, 64), "black")
    out = np.asarray(draw_scene(image, scene, min_size=256, labels=False, line_width=1))
    assert out.shape == (256, 256, 3)

    def colour_at(x, y):
        return tuple(int(c) for c in out[round(y * 255), round(x * 255)])

    assert colour_at(0.0, 0.4) == ROLE_COLOURS["subject"]  # left edge of the subject box
    assert colour_at(1.0, 0.6) == ROLE_COLOURS["object"]  # right edge of the object box
    assert colour_at(0.375, 0.5) == ROLE_COLOURS["action"]  # between box = [0.25, 0.25, 0.5, 0.5]
    assert colour_at(0.375, 0.25) == ROLE_COLOURS["action"]
    labelled = np.asarray(draw_scene(image, scene))
    assert labelled.shape == (256, 256, 3) and (labelled != out).any()
    blank = draw_scene(None, scene)  # layout only, on a white canvas of the scene's size
    assert blank.size == (512, 512)
