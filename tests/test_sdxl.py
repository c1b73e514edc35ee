"""InteractDiffusion-XL: the SDXL backbones (tiny offline, local folder) and the XL interaction module."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from interactdiffusion.config_path import config_dir
from interactdiffusion.models.backbone import BackboneError, build_backbone
from interactdiffusion.models.grounding import InteractionTokenizer
from interactdiffusion.models.sdxl import (
    SDXL_UNET_CONFIG,
    XL_GROUNDING,
    XLBackbone,
    save_xl_backbone,
)
from interactdiffusion.models.unet import build_grounded_unet, fusers, set_fusers_enabled


def _group(group: str, name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(Path(config_dir()) / group / f"{name}.yaml"), resolve=False)


@pytest.fixture(scope="module")
def tiny_xl() -> XLBackbone:
    model = _group("model", "interactdiffusion_xl")
    backbone = build_backbone(**_group("backbone", "tiny_xl"), grounding=model["grounding"])
    backbone.freeze()
    return backbone


def _grounding(n: int, dim: int, real: int = 2) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(n)
    masks = torch.zeros(1, n)
    masks[:, :real] = 1
    return {
        "subject_boxes": torch.rand(1, n, 4, generator=gen).sort(-1).values,
        "object_boxes": torch.rand(1, n, 4, generator=gen).sort(-1).values,
        "masks": masks,
        **{f"{role}_positive_embeddings": torch.randn(1, n, dim, generator=gen) for role in ("subject", "object", "action")},
    }


def test_tiny_xl_has_sdxl_structure(tiny_xl):
    unet = tiny_xl.unet
    assert isinstance(tiny_xl, XLBackbone) and tiny_xl.text_encoder_2 is not None
    assert unet.config.addition_embed_type == "text_time" and unet.config.attention_type == "gated"
    # caption tokens = CLIP-L hidden ⊕ bigG hidden; phrases = CLIP-L pooler ⊕ bigG projection (same width, as SDXL)
    assert unet.config.cross_attention_dim == tiny_xl.phrase_dim == 32 + 48
    assert unet.position_net.positive_len == tiny_xl.phrase_dim and unet.position_net.max_interactions == 32
    assert tiny_xl.tokenizer.pad_token == "<|endoftext|>" and tiny_xl.tokenizer_2.pad_token == "!"
    cond = tiny_xl.unet_text_conditions(["a person riding a horse", ""], "cpu", size=(32, 32))
    assert cond["encoder_hidden_states"].shape == (2, 77, 80)
    assert cond["added_cond_kwargs"]["text_embeds"].shape == (2, 48)
    assert cond["added_cond_kwargs"]["time_ids"].tolist() == [[32, 32, 0, 0, 32, 32]] * 2
    phrases = tiny_xl.phrase_encoder()(["person", "riding", "person"])
    assert phrases.shape == (3, 80) and torch.equal(phrases[0], phrases[2])
    # the phrase vector is the two pooled outputs side by side, unnormalised
    text = tiny_xl.text
    ids_1 = tiny_xl.tokenizer(["riding"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert torch.allclose(phrases[1, :32], text.text_encoder(ids_1).pooler_output[0], atol=1e-6)
    # caption tokens: both encoders' penultimate hidden states (unnormed), as SDXL
    ids_2 = tiny_xl.tokenizer_2([""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    penultimate_2 = text.text_encoder_2(ids_2, output_hidden_states=True).hidden_states[-2]
    assert torch.allclose(cond["encoder_hidden_states"][1, :, 32:], penultimate_2[0], atol=1e-6)


def test_fresh_adapter_leaves_the_tiny_xl_unet_bitwise_unchanged(tiny_xl):
    unet = tiny_xl.unet
    cond = tiny_xl.unet_text_conditions(["a person riding a horse"], "cpu", size=(32, 32))
    noisy = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([500])
    with torch.no_grad():
        set_fusers_enabled(unet, False)
        plain = unet(noisy, t, **cond).sample
        set_fusers_enabled(unet, True)
        for n in (30, 32):  # the official pipeline's 30 slots and training's 32
            grounded = unet(noisy, t, **cond, cross_attention_kwargs={"gligen": _grounding(n, 80)}).sample
            assert torch.equal(plain, grounded)


def test_sdxl_folder_round_trip_and_missing_parts(tiny_xl, tmp_path):
    folder = save_xl_backbone(tiny_xl, tmp_path / "sdxl", dtype=torch.float32)
    loaded = build_backbone(kind="sdxl", path=str(folder), grounding=XL_GROUNDING | {"positive_len": 80, "out_dim": 80})
    assert isinstance(loaded, XLBackbone)
    cond = tiny_xl.unet_text_conditions(["a dog"], "cpu", size=(32, 32))
    cond_loaded = loaded.unet_text_conditions(["a dog"], "cpu", size=(32, 32))
    assert torch.equal(cond["encoder_hidden_states"], cond_loaded["encoder_hidden_states"])
    noisy = torch.randn(1, 4, 4, 4)
    with torch.no_grad():
        assert torch.equal(tiny_xl.unet(noisy, 10, **cond).sample, loaded.unet(noisy, 10, **cond_loaded).sample)

    for part in ("text_encoder_2", "tokenizer_2"):
        (folder / part).rename(tmp_path / part)
    with pytest.raises(BackboneError, match=r"missing: text_encoder_2/config.json, .*tokenizer_2/vocab.json") as err:
        build_backbone(kind="sdxl", path=str(folder))
    assert "stable-diffusion-xl-base-1.0" in str(err.value)
    with pytest.raises(BackboneError, match="backbone folder not found"):
        build_backbone(kind="sdxl", path=str(tmp_path / "nowhere"))
    with pytest.raises(BackboneError, match="backbone.path is not set"):
        build_backbone(kind="sdxl", path=None)


def test_xl_module_is_the_sd1_module_at_2048_with_32_rows():
    """17 tensors, 4,866,112 values; the names of the SD-1.x module (REFERENCE §9)."""
    with torch.device("meta"):
        xl = InteractionTokenizer(positive_len=2048, out_dim=2048, max_interactions=32)
        sd1 = InteractionTokenizer()
    state = xl.state_dict()
    assert list(state) == list(sd1.state_dict()) and len(state) == 17
    assert sum(v.numel() for v in state.values()) == 4_866_112
    assert state["interaction_embedding.emb.weight"].shape == (32, 2048)
    assert state["linears.0.weight"].shape == (512, 2048 + 64)


def test_sdxl_shape_adapter_counts_on_meta():
    """At SDXL 1.0 shape: 70 gated blocks; trainable by the official rule (``position_net`` or ``.fuser``
    in the name) = 1,814,907,852 = fusers 1,810,041,740 + interaction module 4,866,112."""
    with torch.device("meta"):
        unet = build_grounded_unet(SDXL_UNET_CONFIG, XL_GROUNDING)
    params = dict(unet.named_parameters())
    fuser_total = sum(p.numel() for k, p in params.items() if ".fuser" in k)
    module_total = sum(p.numel() for k, p in params.items() if "position_net" in k)
    trainable = sum(p.numel() for k, p in params.items() if "position_net" in k or ".fuser" in k)
    assert len(list(fusers(unet))) == 70
    assert (trainable, fuser_total, module_total) == (1_814_907_852, 1_810_041_740, 4_866_112)


def test_xl_phrase_table_is_cached_under_both_encoders(tiny_xl, tmp_path):
    import copy

    from interactdiffusion.data.phrase_cache import load_or_compute_phrase_table

    phrases = ["person", "riding", "bicycle"]
    table = load_or_compute_phrase_table(phrases, tiny_xl.phrase_encoder(), tmp_path)
    (file,) = tmp_path.glob("phrases-*.safetensors")
    assert table.shape == (3, 80)
    reader = tiny_xl.phrase_encoder()
    reader._encode = None  # a cache hit encodes nothing
    assert torch.equal(load_or_compute_phrase_table(phrases, reader, tmp_path), table)
    # another bigG (same CLIP-L) is another table
    other = copy.copy(tiny_xl)
    other.text_encoder_2 = copy.deepcopy(tiny_xl.text_encoder_2)
    with torch.no_grad():
        other.text_encoder_2.text_projection.weight.mul_(2)
    other_table = load_or_compute_phrase_table(phrases, other.phrase_encoder(), tmp_path)
    assert len(list(tmp_path.glob("phrases-*.safetensors"))) == 2
    assert torch.equal(other_table[:, :32], table[:, :32]) and not torch.equal(other_table[:, 32:], table[:, 32:])


def test_training_conditions_on_the_crop_time_ids(tiny_xl):
    """``time_ids`` from the batch (the recipe's crop) reach the UNet; without them, uncropped at the size."""
    from interactdiffusion.data.transforms import CropGeometry

    geometry = CropGeometry.center(width=640, height=480, resolution=512)
    assert geometry.time_ids() == (480, 640, 0, 85, 512, 512)  # the official XL trainer's centre crop
    latents = torch.zeros(2, 4, 16, 16)  # x2 with the tiny VAE
    module = type("M", (), {"backbone": tiny_xl, "device": torch.device("cpu")})()
    from interactdiffusion.training.module import InteractDiffusionModule

    cropped = InteractDiffusionModule.text_conditions(
        module, ["a", "b"], {"time_ids": torch.tensor([geometry.time_ids()] * 2, dtype=torch.float32)}, latents
    )
    default = InteractDiffusionModule.text_conditions(module, ["a", "b"], {}, latents)
    assert cropped["added_cond_kwargs"]["time_ids"][0].tolist() == [480, 640, 0, 85, 512, 512]
    assert default["added_cond_kwargs"]["time_ids"][0].tolist() == [32, 32, 0, 0, 32, 32]


def test_tiny_xl_exact_resume(tmp_path):
    """experiment=tiny_synthetic_xl: 2 steps + resume + 2 steps == 4 steps; checkpoints hold the adapter only."""
    from train_helpers import FAST, last_checkpoint, paths, run_cli, run_dirs

    shared = tmp_path / "shared"
    common = [o if o != "experiment=tiny_synthetic" else "experiment=tiny_synthetic_xl" for o in FAST]
    common += ["data.batch_size=2", "recipe.warmup_steps=2", "recipe.lr=1e-3"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    run_cli(common + paths(straight, shared) + ["trainer.max_steps=4"])
    run_cli(common + paths(split, shared) + ["trainer.max_steps=2"])
    (first,) = run_dirs(split, name="tiny_synthetic_xl")
    half = last_checkpoint(first)
    run_cli(common + paths(split, shared) + ["trainer.max_steps=4", "ckpt_path=last"])
    (full_run,) = run_dirs(straight, name="tiny_synthetic_xl")
    (resumed,) = run_dirs(split, name="tiny_synthetic_xl")  # the resumed run continues in its own directory
    full, end = last_checkpoint(full_run), last_checkpoint(resumed)
    assert half["global_step"] == 2 and end["global_step"] == full["global_step"] == 4
    assert max((full["state_dict"][k] - end["state_dict"][k]).abs().max().item() for k in full["state_dict"]) <= 1e-7
    assert any((full["state_dict"][k] - half["state_dict"][k]).abs().max() > 0 for k in full["state_dict"])
    keys = set(full["state_dict"])
    assert keys and all(".fuser." in k or k.startswith("unet.position_net.") for k in keys)
    assert full["state_dict"]["unet.position_net.interaction_embedding.emb.weight"].shape == (32, 80)
