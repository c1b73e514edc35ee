"""The XL pipeline on the tiny SDXL-structured backbone: dispatch, official XL arguments, CFG inputs, CLI."""

from __future__ import annotations

import inspect
import json
import sys

import pytest
import torch

from interactdiffusion.atomic import MARKER
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


def _reshard(unet_dir, parts: int = 2) -> None:
    """Split the UNet weights the way ``save_pretrained(max_shard_size=...)`` does."""
    from safetensors.torch import load_file, save_file

    single = unet_dir / "diffusion_pytorch_model.safetensors"
    state = load_file(str(single))
    keys = sorted(state)
    weight_map = {}
    for k in range(parts):
        name = f"diffusion_pytorch_model-{k + 1:05d}-of-{parts:05d}.safetensors"
        chunk = keys[k::parts]
        save_file({key: state[key] for key in chunk}, str(unet_dir / name))
        weight_map.update(dict.fromkeys(chunk, name))
    (unet_dir / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}))
    single.unlink()


def test_save_and_load_xl_folders_ours_and_official_sharded(pipe, tmp_path):
    ours = tmp_path / "ours"
    pipe.save_pretrained(ours)
    assert (ours / "text_encoder_2").is_dir() and (ours / "tokenizer_2").is_dir()
    loaded = InteractDiffusionPipeline.from_pretrained(ours)
    assert type(loaded) is InteractDiffusionXLPipeline
    kwargs = {**OFFICIAL, "num_inference_steps": 1, "output_type": "latent"}
    expected = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images
    assert torch.equal(loaded(**kwargs, generator=torch.Generator().manual_seed(0)).images, expected)

    # the official release: no grounding_config.json (its projection always has 32 rows), sharded UNet
    official = tmp_path / "official"
    pipe.save_pretrained(official)
    (official / "unet" / "grounding_config.json").unlink()
    (official / MARKER).unlink()  # a release from elsewhere: no completion marker of ours
    config = json.loads((official / "unet" / "config.json").read_text())
    (official / "unet" / "config.json").write_text(json.dumps({**config, "_class_name": "InteractDiffusionUNet2DConditionModel"}))
    _reshard(official / "unet")
    released = InteractDiffusionPipeline.from_pretrained(official)
    assert released.unet.position_net.max_interactions == 32
    assert torch.equal(released(**kwargs, generator=torch.Generator().manual_seed(0)).images, expected)

    # a lost shard is named
    next((official / "unet").glob("*-00002-of-00002.safetensors")).unlink()
    with pytest.raises(FileNotFoundError, match="shard diffusion_pytorch_model-00002-of-00002"):
        InteractDiffusionPipeline.from_pretrained(official)


def test_gligen_xl_initialisation_is_an_explicit_copy(tmp_path, caplog):
    """GLIGEN-XL (a sharded diffusers UNet folder) → linear_action ← linears, null_action ← null_positive."""
    from interactdiffusion.models.checkpoints import load_adapter_into
    from interactdiffusion.models.unet import adapter_state_dict

    gligen = build_backbone(kind="tiny_xl", grounding={"kind": "gligen"})
    with torch.no_grad():
        for param in gligen.unet.parameters():
            param.normal_()
    folder = tmp_path / "gligen-xl"
    (folder / "unet").mkdir(parents=True)
    gligen.unet.save_pretrained(folder / "unet")
    _reshard(folder / "unet", parts=3)

    target = build_backbone(kind="tiny_xl", grounding={"max_interactions": 32})
    with caplog.at_level("INFO"):
        load_adapter_into(target.unet, folder, strict=True)
    state, source = adapter_state_dict(target.unet), adapter_state_dict(gligen.unet)
    for k in range(0, 5, 2):
        assert torch.equal(state[f"position_net.linear_action.{k}.weight"], source[f"position_net.linears.{k}.weight"])
    assert torch.equal(state["position_net.null_action_feature"], source["position_net.null_positive_feature"])
    fuser_keys = [k for k in source if ".fuser." in k]
    assert fuser_keys and all(torch.equal(state[k], source[k]) for k in fuser_keys)
    assert state["position_net.interaction_embedding.emb.weight"].shape == (32, 80)
    assert "copied position_net.linears.0.weight -> position_net.linear_action.0.weight" in caplog.text
