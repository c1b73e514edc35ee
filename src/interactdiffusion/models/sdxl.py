"""The SDXL backbone: a local diffusers SDXL folder, or a tiny offline build of the same structure.

SDXL differs from SD-1.x in what conditions the UNet, not in how the adapter attaches: two text
encoders (CLIP-L and OpenCLIP bigG with projection), caption tokens 2048 wide, and ``added_cond_kwargs``
(pooled caption + six size numbers) for ``addition_embed_type="text_time"``. ``XLBackbone`` carries
the second encoder and says how to condition; the grounded UNet is built exactly as for SD-1.x.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMScheduler
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from .backbone import (
    SD_SCHEDULER_CONFIG,
    Backbone,
    BackboneError,
    check_backbone_folder,
    clip_tokenizer_files,
    load_diffusers_backbone,
    save_backbone,
)
from .space_to_depth import build_autoencoder
from .text_encoders import DualPhraseEncoder, DualTextEncoder, default_time_ids
from .unet import build_grounded_unet

EXPECTED_XL_LAYOUT = """\
expected a diffusers-format SDXL folder:
  <path>/unet/config.json + diffusion_pytorch_model.safetensors (or .bin)
  <path>/vae/config.json + diffusion_pytorch_model.safetensors (or .bin)
  <path>/text_encoder/config.json + model.safetensors (or pytorch_model.bin)      (CLIP ViT-L)
  <path>/text_encoder_2/config.json + model.safetensors (or pytorch_model.bin)    (OpenCLIP bigG, projection)
  <path>/tokenizer/ and <path>/tokenizer_2/ (vocab.json + merges.txt, or tokenizer.json)
  <path>/scheduler/scheduler_config.json
(e.g. a local copy of stabilityai/stable-diffusion-xl-base-1.0)"""

# SDXL 1.0 base UNet shape, for tests and benchmarks without weights (70 transformer blocks).
SDXL_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [320, 640, 1280],
    "layers_per_block": 2,
    "transformer_layers_per_block": [1, 2, 10],
    "attention_head_dim": [5, 10, 20],
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "norm_num_groups": 32,
}
# InteractDiffusion-XL's interaction module: the SD-1.x module at 2048/2048 with a 32-row table.
XL_GROUNDING: dict[str, Any] = {"kind": "interactdiffusion", "positive_len": 2048, "out_dim": 2048,
                                "hidden_dim": 512, "max_interactions": 32}

TINY_XL_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "transformer_layers_per_block": [1, 2],
    "attention_head_dim": [2, 4],
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "norm_num_groups": 32,
}
TINY_XL_TEXT_CONFIG: dict[str, Any] = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                       "num_attention_heads": 4, "max_position_embeddings": 77,
                                       "projection_dim": 32}
TINY_XL_TEXT_2_CONFIG: dict[str, Any] = {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2,
                                         "num_attention_heads": 4, "max_position_embeddings": 77,
                                         "projection_dim": 48, "hidden_act": "gelu"}
TINY_XL_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "norm_num_groups": 32, "sample_size": 32,
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
    "block_out_channels": [32, 32], "layers_per_block": 1, "scaling_factor": 0.13025,
}


@dataclass
class XLBackbone(Backbone):
    """SDXL's frozen parts: ``Backbone`` plus bigG (``text_encoder_2``) and its tokenizer."""

    text_encoder_2: CLIPTextModelWithProjection | None = None
    tokenizer_2: CLIPTokenizer | None = None

    @property
    def text(self) -> DualTextEncoder:
        return DualTextEncoder(self.text_encoder, self.text_encoder_2, self.tokenizer, self.tokenizer_2)

    @property
    def phrase_dim(self) -> int:
        return self.text.phrase_dim

    def phrase_encoder(self) -> DualPhraseEncoder:
        return DualPhraseEncoder(self.text)

    def frozen_encoders(self) -> tuple[torch.nn.Module, ...]:
        return (self.vae, self.text_encoder, self.text_encoder_2)

    def unet_text_conditions(
        self, captions: Sequence[str], device, time_ids: torch.Tensor | None = None, size: tuple[int, int] = (0, 0)
    ) -> dict[str, Any]:
        """The UNet's text inputs: caption tokens and ``added_cond_kwargs``; without ``time_ids`` the
        images count as uncropped at ``size`` (pixels)."""
        tokens, pooled = self.text.encode_prompt(captions, device)
        if time_ids is None:
            time_ids = default_time_ids(len(captions), *size, device=device)
        added = {"text_embeds": pooled, "time_ids": time_ids.to(device, pooled.dtype)}
        return {"encoder_hidden_states": tokens, "added_cond_kwargs": added}


def _clip_tokenizer(pad_token: str) -> CLIPTokenizer:
    """CLIP's BPE tokenizer; SDXL's second tokenizer pads with "!" where the first pads with EOS."""
    folder = clip_tokenizer_files()
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77,
                         pad_token=pad_token)


def _text_config(tokenizer: CLIPTokenizer, sizes: dict[str, Any]) -> CLIPTextConfig:
    return CLIPTextConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **sizes)


def build_tiny_xl_backbone(
    unet: dict[str, Any] | None = None,
    vae: dict[str, Any] | None = None,
    text_encoder: dict[str, Any] | None = None,
    text_encoder_2: dict[str, Any] | None = None,
    grounding: dict[str, Any] | None = None,
    scheduler_config: dict[str, Any] | None = None,
    seed: int = 0,
    name: str = "tiny_xl",
) -> XLBackbone:
    """SDXL's structure at toy sizes, random weights (deterministic per seed), real CLIP BPE, offline.

    The UNet's caption width and ``text_time`` projection input follow from the two encoders, as in
    SDXL (2048 = 768 + 1280; 2816 = 1280 + 6 x 256).
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        tokenizer, tokenizer_2 = _clip_tokenizer("<|endoftext|>"), _clip_tokenizer("!")
        sizes_1 = {**TINY_XL_TEXT_CONFIG, **(text_encoder or {})}
        sizes_2 = {**TINY_XL_TEXT_2_CONFIG, **(text_encoder_2 or {})}
        encoder_1 = CLIPTextModel(_text_config(tokenizer, sizes_1))
        encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer_2, sizes_2))
        unet_cfg = {**TINY_XL_UNET_CONFIG, **(unet or {})}
        unet_cfg.setdefault("cross_attention_dim", sizes_1["hidden_size"] + sizes_2["hidden_size"])
        unet_cfg.setdefault(
            "projection_class_embeddings_input_dim", sizes_2["projection_dim"] + 6 * unet_cfg["addition_time_embed_dim"]
        )
        grounding = dict(grounding or {})
        grounding.setdefault("positive_len", sizes_1["hidden_size"] + sizes_2["projection_dim"])
        grounded = build_grounded_unet(unet_cfg, grounding)
        autoencoder = build_autoencoder({**TINY_XL_VAE_CONFIG, **(vae or {})})
    scheduler = DDPMScheduler.from_config({**SD_SCHEDULER_CONFIG, **(scheduler_config or {})})
    return XLBackbone(grounded, autoencoder, encoder_1, tokenizer, scheduler, name=name,
                      text_encoder_2=encoder_2, tokenizer_2=tokenizer_2)


def check_sdxl_folder(path: str | Path) -> Path:
    """Raise ``BackboneError`` naming every missing part of an SDXL folder; return it when complete."""
    folder = Path(path).expanduser()
    missing: list[str] = []
    try:
        check_backbone_folder(folder)
    except BackboneError as err:
        if not folder.is_dir():
            raise BackboneError(f"backbone folder not found: {folder}\n{EXPECTED_XL_LAYOUT}") from None
        missing.extend(str(err).split("missing: ", 1)[1].split("\n", 1)[0].split(", "))
    if not (folder / "text_encoder_2" / "config.json").is_file():
        missing.append("text_encoder_2/config.json")
    if not any((folder / "text_encoder_2" / n).is_file() for n in ("model.safetensors", "pytorch_model.bin")) and not (
        folder / "text_encoder_2" / "model.safetensors.index.json"
    ).is_file():
        missing.append("text_encoder_2/model.safetensors")
    tok = folder / "tokenizer_2"
    if not ((tok / "vocab.json").is_file() and (tok / "merges.txt").is_file()) and not (tok / "tokenizer.json").is_file():
        missing.append("tokenizer_2/vocab.json + tokenizer_2/merges.txt (or tokenizer_2/tokenizer.json)")
    if missing:
        raise BackboneError(f"backbone folder {folder} is incomplete; missing: {', '.join(missing)}\n{EXPECTED_XL_LAYOUT}")
    return folder


def load_sdxl_backbone(
    path: str | Path,
    grounding: dict[str, Any] | None = None,
    scheduler_config: dict[str, Any] | None = None,
    name: str | None = None,
) -> XLBackbone:
    """SDXL from a local diffusers folder; the UNet is rebuilt with gated blocks + our tokenizer
    (``positive_len`` defaults to CLIP-L width + bigG projection, 2048 for SDXL)."""
    folder = check_sdxl_folder(path)
    encoder_2 = CLIPTextModelWithProjection.from_pretrained(
        folder / "text_encoder_2", local_files_only=True, dtype=torch.float32
    )
    encoder_1_config = CLIPTextConfig.from_pretrained(folder / "text_encoder", local_files_only=True)
    grounding = dict(grounding or {})
    grounding.setdefault("positive_len", encoder_1_config.hidden_size + encoder_2.config.projection_dim)
    base = load_diffusers_backbone(folder, grounding, scheduler_config, name)
    tokenizer_2 = CLIPTokenizer.from_pretrained(folder / "tokenizer_2", local_files_only=True)
    return XLBackbone(base.unet, base.vae, base.text_encoder, base.tokenizer, base.scheduler, name=base.name,
                      text_encoder_2=encoder_2, tokenizer_2=tokenizer_2)


def save_xl_backbone(backbone: XLBackbone, folder: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """``save_backbone`` plus ``text_encoder_2/`` and ``tokenizer_2/``: a folder ``load_sdxl_backbone`` reads."""
    folder = save_backbone(backbone, folder, dtype)
    original = backbone.text_encoder_2.dtype
    backbone.text_encoder_2.to(dtype).save_pretrained(folder / "text_encoder_2")
    backbone.text_encoder_2.to(original)
    backbone.tokenizer_2.save_pretrained(folder / "tokenizer_2")
    return folder
