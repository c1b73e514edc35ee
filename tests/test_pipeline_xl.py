"""The XL pipeline on the tiny SDXL-structured backbone: dispatch, official XL arguments, CFG inputs, CLI."""

from __future__ import annotations

import inspect
import json
import sys

import pytest
import torch

from interactdiffusion.models.backbone import build_backbone
from interactdiffusion.pipeline import InteractDiffusionPipeline
from interactdiffusion.pipeline_xl import InteractDiffusionXLPipeline

OFFICIAL = {
    "prompt": "a person riding a horse",
    "interactdiffusion_subject_phrases": ["person"],
    "interactdiffusion_object_phrases": ["horse"],
    "interactdiffusion_action_phrases": ["riding"],
    "interactdiffusion_subject_boxes": [[0.1, 0.1, 0.5, 0.9]],
    "interactdiffusion_object_boxes": [[0.3, 0.4, 0.9, 0.95]],
}


@pytest.fixture(scope="module")
def pipe():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny models run much faster on one thread on a busy machine
    backbone = build_backbone(kind="tiny_xl", grounding={"max_interactions": 32})
    with torch.no_grad():  # a trained-looking adapter, so that grounding changes the output
        for name, param in backbone.unet.named_parameters():
            if "alpha" in name:
                param.fill_(1.0)
    yield InteractDiffusionPipeline.from_backbone(backbone)
    torch.set_num_threads(before)


def _capture_first_unet_call(pipe, **kwargs) -> dict:
    seen = {}

    def hook(module, args, call_kwargs):
        seen.setdefault("kwargs", call_kwargs)
        seen.setdefault("fusers_on", [f.enabled for f in module.modules() if hasattr(f, "alpha_attn")])

    handle = pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        pipe(**kwargs)
    finally:
        handle.remove()
    return seen


def test_dispatch_and_official_xl_defaults(pipe):
    assert type(pipe) is InteractDiffusionXLPipeline
    defaults = inspect.signature(InteractDiffusionXLPipeline.__call__).parameters
    assert defaults["num_inference_steps"].default == 50 and defaults["guidance_scale"].default == 5.0
    assert defaults["interactdiffusion_scheduled_sampling_beta"].default == 1.0
    assert tuple(defaults["crops_coords_top_left"].default) == (0, 0)
    assert "text_encoder_2" in pipe.components and "tokenizer_2" in pipe.components


def test_cfg_half_sees_zero_negatives_and_null_tokens_with_fusers_on(pipe):
    seen = _capture_first_unet_call(pipe, **OFFICIAL, num_inference_steps=1, output_type="latent",
                                    generator=torch.Generator().manual_seed(0))
    kwargs = seen["kwargs"]
    added = kwargs["added_cond_kwargs"]
    uncond_tokens, cond_tokens = kwargs["encoder_hidden_states"].chunk(2)
    assert not uncond_tokens.any() and cond_tokens.abs().sum() > 0  # no negative prompt: zeros
    assert not added["text_embeds"][0].any() and added["text_embeds"][1].abs().sum() > 0
    assert added["time_ids"].tolist() == [[32, 32, 0, 0, 32, 32]] * 2
    objs = kwargs["cross_attention_kwargs"]["gligen"]["objs"]
    null = pipe.null_grounding_tokens(1, "cpu")
    assert torch.equal(objs[:1], null) and not torch.equal(objs[1:], null)
    assert all(seen["fusers_on"]) and len(seen["fusers_on"]) == 8


def test_official_sdxl_arguments(pipe):
    seen = _capture_first_unet_call(
        pipe, **OFFICIAL, prompt_2="a horse rider", negative_prompt="blurry", num_inference_steps=1,
        original_size=(480, 640), crops_coords_top_left=(0, 85), target_size=(32, 32), output_type="latent",
    )
    added = seen["kwargs"]["added_cond_kwargs"]
    assert added["time_ids"][1].tolist() == [480, 640, 0, 85, 32, 32]
    assert added["text_embeds"][0].abs().sum() > 0  # "blurry" is encoded, not zeroed
    tokens, pooled = pipe.text.encode_prompt(["a person riding a horse"], "cpu")
    tokens_2, pooled_2 = pipe.text.encode_prompt(["a horse rider"], "cpu")
    cond = seen["kwargs"]["encoder_hidden_states"][1]
    assert torch.equal(cond[:, :32], tokens[0, :, :32]) and torch.equal(cond[:, 32:], tokens_2[0, :, 32:])
    assert torch.equal(added["text_embeds"][1], pooled_2[0])
    with pytest.raises(ValueError, match="pooled_prompt_embeds"):
        pipe(**{**OFFICIAL, "prompt": None}, prompt_embeds=tokens, num_inference_steps=1, output_type="latent")
    out = pipe(**{**OFFICIAL, "prompt": None}, prompt_embeds=tokens, pooled_prompt_embeds=pooled,
               num_inference_steps=1, output_type="np", generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 32, 32, 3)


def test_generate_cli_on_tiny_xl_unchanged(tmp_path):
    from interactdiffusion.cli import generate as cli

    scenes = tmp_path / "scenes.json"
    scenes.write_text(json.dumps([{"id": "ride", "prompt": OFFICIAL["prompt"], "interactions": [{
        "subject": "person", "action": "riding", "object": "horse",
        "subject_box": [0.1, 0.1, 0.5, 0.9], "object_box": [0.3, 0.4, 0.9, 0.95]}]}]))
    argv = sys.argv
    sys.argv = ["interactdiffusion-generate", "backbone=tiny_xl", "model=interactdiffusion_xl", f"input={scenes}",
                f"output_dir={tmp_path / 'out'}", "steps=2", "progress=false",
                f"phrase_cache={tmp_path / 'phrases.safetensors'}"]
    try:
        cli.main()
    finally:
        sys.argv = argv
    (record,) = [json.loads(line) for line in (tmp_path / "out" / "metadata.jsonl").read_text().splitlines()]
    assert (tmp_path / "out" / "ride.png").is_file() and record["height"] == 32
    assert record["settings"]["guidance_scale"] == 5.0  # the XL backbone's generation default
    assert (tmp_path / "phrases.safetensors").is_file()
