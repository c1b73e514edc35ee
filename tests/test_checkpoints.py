"""Checkpoint conversion: files with the official key layouts built from random tensors, read back.

Most tests use the tiny backbone (the LDM block mapping is derived from the UNet config); the SD-1.x
layout is checked against the official prefix table and on the SD-1.x UNet's adapter.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict

import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING
from omegaconf import OmegaConf
from safetensors.torch import save_file
from transformers import CLIPTextModel

from interactdiffusion.models.backbone import TINY_UNET_CONFIG
from interactdiffusion.models.checkpoints import (
    CheckpointError,
    convert_ldm_unet,
    diffusers_adapter_to_ldm,
    init_from_gligen,
    ldm_adapter_to_diffusers,
    ldm_block_prefixes,
    load_adapter,
    load_adapter_into,
    load_adapter_weights,
    load_diffusers_adapter,
    load_official_adapter,
    load_official_full_checkpoint,
    save_adapter,
)
from interactdiffusion.models.unet import (
    SD1_UNET_CONFIG,
    adapter_state_dict,
    build_grounded_unet,
    is_adapter_key,
)

OFFICIAL_PREFIXES = {  # REFERENCE §1 "Block prefixes"
    "input_blocks.1.1": "down_blocks.0.attentions.0", "input_blocks.2.1": "down_blocks.0.attentions.1",
    "input_blocks.4.1": "down_blocks.1.attentions.0", "input_blocks.5.1": "down_blocks.1.attentions.1",
    "input_blocks.7.1": "down_blocks.2.attentions.0", "input_blocks.8.1": "down_blocks.2.attentions.1",
    "middle_block.1": "mid_block.attentions.0",
    "output_blocks.3.1": "up_blocks.1.attentions.0", "output_blocks.4.1": "up_blocks.1.attentions.1",
    "output_blocks.5.1": "up_blocks.1.attentions.2", "output_blocks.6.1": "up_blocks.2.attentions.0",
    "output_blocks.7.1": "up_blocks.2.attentions.1", "output_blocks.8.1": "up_blocks.2.attentions.2",
    "output_blocks.9.1": "up_blocks.3.attentions.0", "output_blocks.10.1": "up_blocks.3.attentions.1",
    "output_blocks.11.1": "up_blocks.3.attentions.2",
}
RESNET_TO_LDM = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
                 "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}


# -- building files in the official layouts -----------------------------------------------------------
def randomized(state, seed=0):
    """Distinct random values everywhere, so a swapped or dropped key cannot go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g).to(v.dtype) for k, v in state.items()}


def unet_to_ldm(state, config):
    """Diffusers UNet keys → LDM keys (the inverse of diffusers' converter), to write official-style files."""
    lpb = config["layers_per_block"]
    rename = {}
    for b in range(len(config["down_block_types"])):
        for layer in range(lpb):
            i = 1 + b * (lpb + 1) + layer
            rename[f"down_blocks.{b}.resnets.{layer}."] = f"input_blocks.{i}.0."
            rename[f"down_blocks.{b}.attentions.{layer}."] = f"input_blocks.{i}.1."
        rename[f"down_blocks.{b}.downsamplers.0.conv."] = f"input_blocks.{(b + 1) * (lpb + 1)}.0.op."
    rename.update({"mid_block.resnets.0.": "middle_block.0.", "mid_block.attentions.0.": "middle_block.1.",
                   "mid_block.resnets.1.": "middle_block.2."})
    for b, kind in enumerate(config["up_block_types"]):
        for layer in range(lpb + 1):
            i = b * (lpb + 1) + layer
            rename[f"up_blocks.{b}.resnets.{layer}."] = f"output_blocks.{i}.0."
            rename[f"up_blocks.{b}.attentions.{layer}."] = f"output_blocks.{i}.1."
        upsampler = 2 if "CrossAttn" in kind else 1
        rename[f"up_blocks.{b}.upsamplers.0.conv."] = f"output_blocks.{b * (lpb + 1) + lpb}.{upsampler}.conv."
    top = DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"]
    out = {}
    for key, value in state.items():
        if key in top or key.startswith("position_net."):
            out[top.get(key, key)] = value
            continue
        old = next(o for o in rename if key.startswith(o))
        rest = key[len(old):]
        if ".resnets." in old:
            head, _, tail = rest.partition(".")
            rest = f"{RESNET_TO_LDM[head]}.{tail}"
        out[rename[old] + rest] = value
    return out


def vae_to_ldm(state, n_blocks):
    """Diffusers AutoencoderKL keys → LDM autoencoder keys (attention weights as 1x1 convs)."""
    top = DIFFUSERS_TO_LDM_MAPPING["vae"]
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for key, value in state.items():
        if key in top:
            out[top[key]] = value
            continue
        k = key.replace("mid_block.resnets.0.", "mid.block_1.").replace("mid_block.resnets.1.", "mid.block_2.")
        k = k.replace("conv_shortcut", "nin_shortcut").replace(".resnets.", ".block.")
        k = k.replace("downsamplers.0", "downsample").replace("upsamplers.0", "upsample")
        k = k.replace("encoder.down_blocks.", "encoder.down.")
        if k.startswith("decoder.up_blocks."):
            i, rest = k.removeprefix("decoder.up_blocks.").split(".", 1)
            k = f"decoder.up.{n_blocks - 1 - int(i)}.{rest}"
        if "mid_block.attentions.0." in k:
            rest = k.split("mid_block.attentions.0.")[1]
            name, _, param = rest.rpartition(".")
            k = k.split("mid_block.attentions.0.")[0] + f"mid.attn_1.{attn[name]}.{param}"
            if param == "weight" and name != "group_norm":
                value = value[:, :, None, None]
        out[k] = value
    return out


def assert_same(a, b):
    assert set(a) == set(b)
    for k in a:
        assert a[k].shape == b[k].shape and torch.equal(a[k], b[k]), k


@pytest.fixture()
def tiny_unet():
    torch.manual_seed(0)
    unet = build_grounded_unet(TINY_UNET_CONFIG)
    unet.load_state_dict(randomized(unet.state_dict()))
    return unet


def official_config_dict():
    """What the official trainer pickles as ``config_dict``: ``vars()`` of an OmegaConf config."""
    config = OmegaConf.create({"model": {"target": "ldm.UNetModel", "params": {"context_dim": 768}},
                               "base_learning_rate": 5e-5, "train_dataset_names": {"HICODET": {}}})
    config.update({"name": "hoi", "batch_size": 4, "ckpt": None, "gradient_accumulation_step": [2]})
    return vars(config)


# -- LDM <-> diffusers names --------------------------------------------------------------------------
def test_block_prefixes_derived_from_the_sd1_config_equal_the_official_table():
    assert ldm_block_prefixes(SD1_UNET_CONFIG) == OFFICIAL_PREFIXES
    assert ldm_block_prefixes() == OFFICIAL_PREFIXES
    assert ldm_block_prefixes(TINY_UNET_CONFIG) == {
        "input_blocks.1.1": "down_blocks.0.attentions.0",
        "middle_block.1": "mid_block.attentions.0",
        "output_blocks.2.1": "up_blocks.1.attentions.0",
        "output_blocks.3.1": "up_blocks.1.attentions.1",
    }


def test_sd1_adapter_ldm_round_trip_is_lossless(sd1_unet):
    state = adapter_state_dict(sd1_unet)
    ldm = diffusers_adapter_to_ldm(state)
    assert len(ldm) == len(state) == 16 * 17 + 17
    blocks = {k.split(".transformer_blocks.")[0] for k in ldm if ".fuser." in k}
    assert blocks == set(OFFICIAL_PREFIXES)
    assert ldm["input_blocks.1.1.transformer_blocks.0.fuser.linear.weight"].shape == (320, 768)
    assert ldm["output_blocks.3.1.transformer_blocks.0.fuser.ff.net.0.proj.weight"].shape == (8 * 1280, 1280)
    back = ldm_adapter_to_diffusers(ldm)
    prefixed = ldm_adapter_to_diffusers({f"model.diffusion_model.{k}": v for k, v in ldm.items()})
    for converted in (back, prefixed):  # a pure rename: the very same tensors come back
        assert set(converted) == set(state)
        assert all(converted[k] is state[k] for k in state)


def test_sd1_whole_unet_in_ldm_names_converts_to_the_grounded_unet(sd1_unet):
    state = sd1_unet.state_dict()
    ldm = unet_to_ldm(state, SD1_UNET_CONFIG)
    for key in ("time_embed.0.weight", "input_blocks.3.0.op.weight", "input_blocks.4.0.skip_connection.weight",
                "middle_block.1.proj_in.weight", "output_blocks.2.1.conv.weight", "output_blocks.5.2.conv.weight",
                "output_blocks.11.1.transformer_blocks.0.fuser.alpha_attn", "out.2.bias"):
        assert key in ldm, key  # the LDM layout of the official files
    converted = convert_ldm_unet({f"model.diffusion_model.{k}": v for k, v in ldm.items()})
    assert set(converted) == set(state)
    assert all(converted[k] is state[k] for k in state)


def test_official_adapter_file_loads_and_converts_back_losslessly(tiny_unet, tmp_path):
    state = adapter_state_dict(tiny_unet)
    ldm = diffusers_adapter_to_ldm(state, tiny_unet.config)
    path = tmp_path / "ext_interactdiff_v1.2.pth"
    torch.save(OrderedDict(ldm), path)
    loaded = load_official_adapter(path, tiny_unet.config)
    assert_same(loaded, state)
    assert_same(diffusers_adapter_to_ldm(loaded, tiny_unet.config), ldm)
    assert_same(load_adapter_weights(path, tiny_unet), state)


def test_unknown_block_in_an_ldm_adapter_is_an_error(tiny_unet, tmp_path):
    ldm = diffusers_adapter_to_ldm(adapter_state_dict(tiny_unet), tiny_unet.config)
    ldm["input_blocks.7.1.transformer_blocks.0.fuser.alpha_attn"] = torch.tensor(0.5)
    path = tmp_path / "adapter.pth"
    torch.save(ldm, path)
    with pytest.raises(CheckpointError, match="input_blocks.7.1"):
        load_official_adapter(path, tiny_unet.config)


# -- the official full checkpoint ---------------------------------------------------------------------
def test_full_checkpoint_with_position_ids_and_omegaconf_config_loads_losslessly(tiny_unet, tiny_backbone, tmp_path):
    unet_state = tiny_unet.state_dict()
    vae_state = randomized(tiny_backbone.vae.state_dict(), seed=1)
    text_state = randomized(tiny_backbone.text_encoder.state_dict(), seed=2)
    text_ldm = {f"transformer.{k}": v for k, v in text_state.items()}
    text_ldm["transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    path = tmp_path / "interact-diffusion-v1.pth"
    torch.save({
        "model": unet_to_ldm(unet_state, tiny_unet.config),
        "autoencoder": vae_to_ldm(vae_state, len(tiny_backbone.vae.config.down_block_types)),
        "text_encoder": text_ldm,
        "diffusion": {"betas": torch.linspace(0.00085, 0.012, 1000)},
        "config_dict": official_config_dict(),
    }, path)

    loaded = load_official_full_checkpoint(path, tiny_unet.config)
    assert_same(loaded.unet, unet_state)
    assert_same(loaded.adapter, adapter_state_dict(tiny_unet))
    assert_same(loaded.vae, vae_state)
    assert_same(loaded.text_encoder, text_state)
    assert any("position_ids" in d for d in loaded.dropped)
    fresh = build_grounded_unet(TINY_UNET_CONFIG)
    fresh.load_state_dict(loaded.unet, strict=True)
    AutoencoderKL.from_config(tiny_backbone.vae.config).load_state_dict(loaded.vae, strict=True)
    CLIPTextModel(tiny_backbone.text_encoder.config).load_state_dict(loaded.text_encoder, strict=True)
    assert_same(load_adapter_weights(path, tiny_unet), adapter_state_dict(tiny_unet))


def test_full_checkpoint_with_an_unknown_unet_key_is_an_error(tiny_unet, tmp_path):
    model = unet_to_ldm(tiny_unet.state_dict(), tiny_unet.config)
    model["input_blocks.1.2.extra.weight"] = torch.zeros(1)
    path = tmp_path / "full.pth"
    torch.save({"model": model}, path)
    with pytest.raises(CheckpointError, match=r"full.pth.*input_blocks.1.2.extra.weight"):
        load_official_full_checkpoint(path, tiny_unet.config)


# -- the official diffusers-format folder -------------------------------------------------------------
def test_diffusers_folder_gives_its_adapter_keys(tiny_unet, tmp_path):
    (tmp_path / "unet").mkdir()
    save_file(tiny_unet.state_dict(), str(tmp_path / "unet" / "diffusion_pytorch_model.safetensors"))
    (tmp_path / "unet" / "config.json").write_text(json.dumps(dict(tiny_unet.config)))
    expected = adapter_state_dict(tiny_unet)
    assert_same(load_diffusers_adapter(tmp_path), expected)
    assert_same(load_diffusers_adapter(tmp_path / "unet"), expected)
    assert_same(load_adapter_weights(tmp_path, tiny_unet), expected)


def test_plain_sd_folder_has_no_adapter(tmp_path):
    (tmp_path / "unet").mkdir()
    save_file({"conv_in.weight": torch.zeros(2, 2)}, str(tmp_path / "unet" / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(CheckpointError, match="no adapter keys"):
        load_adapter_weights(tmp_path)


# -- GLIGEN as initialisation ---------------------------------------------------------------------------
@pytest.fixture()
def gligen_unet():
    unet = build_grounded_unet(TINY_UNET_CONFIG, {"kind": "gligen"})
    unet.load_state_dict(randomized(unet.state_dict(), seed=3))
    return unet


def _gligen_pth(gligen_unet, path):
    model = unet_to_ldm(gligen_unet.state_dict(), gligen_unet.config)
    torch.save({"model": model, "config_dict": official_config_dict()}, path)
    return path


def test_gligen_init_copies_exactly_what_it_reports(gligen_unet, tiny_unet, tmp_path, caplog):
    gligen = adapter_state_dict(gligen_unet)
    path = _gligen_pth(gligen_unet, tmp_path / "any_name_at_all.pth")
    with caplog.at_level(logging.INFO, logger="interactdiffusion.models.checkpoints"):
        state, report = init_from_gligen(path, target_unet=tiny_unet, seed=7)
    assert set(state) == set(adapter_state_dict(tiny_unet))
    assert set(report.copied) == set(gligen)
    for key in gligen:
        assert torch.equal(state[key], gligen[key]), key
    alphas = [k for k in gligen if k.endswith(("alpha_attn", "alpha_dense"))]
    assert alphas and all(gligen[k].item() != 0 for k in alphas)
    assert report.derived == {
        **{f"position_net.linear_action.{i}.{w}": f"position_net.linears.{i}.{w}"
           for i in (0, 2, 4) for w in ("weight", "bias")},
        "position_net.null_action_feature": "position_net.null_positive_feature",
    }
    for new, src in report.derived.items():
        assert torch.equal(state[new], gligen[src])
        assert state[new].data_ptr() != state[src].data_ptr()
    assert report.created == sorted(["position_net.interaction_embedding.emb.weight",
                                     "position_net.position_embedding.emb.weight"])
    embedding = state["position_net.interaction_embedding.emb.weight"]
    assert embedding.shape == (30, TINY_UNET_CONFIG["cross_attention_dim"])
    assert 0.015 < embedding.std().item() < 0.025
    again, _ = init_from_gligen(path, target_unet=tiny_unet, seed=7)
    other, _ = init_from_gligen(path, target_unet=tiny_unet, seed=8)
    assert torch.equal(again["position_net.interaction_embedding.emb.weight"], embedding)
    assert not torch.equal(other["position_net.interaction_embedding.emb.weight"], embedding)
    assert report.ignored == []
    assert "any_name_at_all.pth" in caplog.text and "linear_action" in caplog.text


def test_gligen_file_is_detected_and_loads_into_every_variant(gligen_unet, tmp_path):
    gligen = adapter_state_dict(gligen_unet)
    path = _gligen_pth(gligen_unet, tmp_path / "checkpoint_generation_text.pth")

    ours = build_grounded_unet(TINY_UNET_CONFIG)
    assert load_adapter_into(ours, path) == []
    loaded = adapter_state_dict(ours)
    assert torch.equal(loaded["position_net.linear_action.0.weight"], gligen["position_net.linears.0.weight"])

    same_variant = build_grounded_unet(TINY_UNET_CONFIG, {"kind": "gligen"})
    load_adapter_into(same_variant, path)
    assert_same(adapter_state_dict(same_variant), gligen)

    no_action = build_grounded_unet(TINY_UNET_CONFIG, {"use_action_tokens": False})
    load_adapter_into(no_action, path)
    assert not any("linear_action" in k or "null_action" in k for k in adapter_state_dict(no_action))

    (tmp_path / "unet").mkdir()
    save_file(gligen_unet.state_dict(), str(tmp_path / "unet" / "diffusion_pytorch_model.safetensors"))
    untargeted = load_adapter_weights(tmp_path)  # no target: the full InteractDiffusion key set
    assert set(untargeted) == set(adapter_state_dict(ours))


def test_gligen_diffusers_folder_initialises_too(gligen_unet, tiny_unet, tmp_path):
    (tmp_path / "unet").mkdir()
    save_file(gligen_unet.state_dict(), str(tmp_path / "unet" / "diffusion_pytorch_model.safetensors"))
    state, report = init_from_gligen(tmp_path, target_unet=tiny_unet)
    assert set(state) == set(adapter_state_dict(tiny_unet))
    assert len(report.derived) == 7 and len(report.created) == 2


def test_interactdiffusion_weights_are_not_taken_for_gligen(tiny_unet):
    with pytest.raises(CheckpointError, match="not GLIGEN"):
        init_from_gligen(adapter_state_dict(tiny_unet))


# -- our export -------------------------------------------------------------------------------------------
def test_export_round_trip_is_lossless(tiny_unet, tmp_path):
    config = OmegaConf.create({"kind": "interactdiffusion", "max_interactions": 30, "action_box": "between"})
    weights = save_adapter(tiny_unet, tmp_path / "exports" / "adapter-v1.2", config)
    assert weights.name == "adapter-v1.2.safetensors"
    sidecar = json.loads((tmp_path / "exports" / "adapter-v1.2.json").read_text())
    assert sidecar["format_version"] == 1 and sidecar["grounding"]["action_box"] == "between"
    assert sidecar["backbone"]["block_out_channels"] == [32, 64]

    state, meta = load_adapter(weights)
    assert_same(state, adapter_state_dict(tiny_unet))
    assert meta == sidecar
    assert not any(not is_adapter_key(k) for k in state)
    (tmp_path / "exports" / "adapter-v1.2.json").unlink()  # the safetensors header alone suffices
    assert load_adapter(tmp_path / "exports" / "adapter-v1.2")[1] == sidecar
    assert_same(load_adapter_weights(tmp_path / "exports" / "adapter-v1.2"), state)

    target = build_grounded_unet(TINY_UNET_CONFIG)
    assert load_adapter_into(target, weights) == []
    assert_same(adapter_state_dict(target), state)


# -- refusals and clear errors ----------------------------------------------------------------------------
def _side_effect(marker):
    open(marker, "w").close()


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return _side_effect, (self.marker,)


def test_pickled_code_is_refused_and_never_runs(tiny_unet, tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save({"model": adapter_state_dict(tiny_unet), "config_dict": Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match=r"evil.pth.*_side_effect.*weights_only=True"):
        load_adapter_weights(path, tiny_unet)
    assert not marker.exists()


def test_mismatched_shapes_give_a_clear_error(tiny_unet, tmp_path):
    weights = save_adapter(tiny_unet, tmp_path / "adapter")
    wider = build_grounded_unet({**TINY_UNET_CONFIG, "block_out_channels": [64, 64]})
    with pytest.raises(CheckpointError, match=r"adapter.safetensors: adapter weights do not fit this backbone"):
        load_adapter_into(wider, weights)


@pytest.mark.parametrize("name, content", [("junk.pth", b"\x00not a checkpoint"), ("junk.safetensors", b"1234")])
def test_unreadable_files_name_the_file_and_the_accepted_formats(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"(?s){name}.*accepted adapter checkpoints"):
        load_adapter_weights(path)
    with pytest.raises(CheckpointError, match="no such file"):
        load_adapter_weights(tmp_path / "missing.pth")


def test_a_file_without_adapter_keys_is_an_error(tmp_path):
    path = tmp_path / "sd.pth"
    torch.save({"input_blocks.0.0.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="no adapter keys"):
        load_adapter_weights(path)
