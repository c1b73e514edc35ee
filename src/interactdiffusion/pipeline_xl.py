"""InteractDiffusion-XL generation: ``InteractDiffusionPipeline`` with SDXL's text conditioning.

Everything that is not text (scenes, phrase table, grounding tokens computed once per call, scheduled
sampling, the CFG half on null tokens with the fusers on, seeding, decoding) is the SD-1.x pipeline's.
What differs: two text encoders, caption tokens of both encoders' penultimate layers, and
``added_cond_kwargs`` (pooled bigG caption + ``time_ids``); defaults follow the official XL pipeline
(50 steps, guidance 5.0, beta 1.0, crop (0, 0), zero negatives when no negative prompt is given).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from .models.sdxl import XL_GROUNDING, XLBackbone
from .models.space_to_depth import load_autoencoder
from .models.text_encoders import DualPhraseEncoder, DualTextEncoder
from .pipeline import (
    InteractDiffusionPipeline,
    _negatives,
    make_scheduler,
    resolve_dtype,
)


@dataclass
class MicroConditioning:
    """The official XL pipeline's size arguments (pixels); ``None`` sizes mean the output size."""

    original_size: tuple[int, int] | None = None
    crops_coords_top_left: tuple[int, int] = (0, 0)
    target_size: tuple[int, int] | None = None
    negative_original_size: tuple[int, int] | None = None
    negative_crops_coords_top_left: tuple[int, int] = (0, 0)
    negative_target_size: tuple[int, int] | None = None
    prompt_2: str | list[str] | None = None
    negative_prompt_2: str | list[str] | None = None
    pooled_prompt_embeds: torch.Tensor | None = None
    negative_pooled_prompt_embeds: torch.Tensor | None = None

    def time_ids(self, size: tuple[int, int], negative: bool = False) -> list[int]:
        if negative and self.negative_original_size is not None and self.negative_target_size is not None:
            return [*self.negative_original_size, *self.negative_crops_coords_top_left, *self.negative_target_size]
        return [*(self.original_size or size), *self.crops_coords_top_left, *(self.target_size or size)]


class InteractDiffusionXLPipeline(InteractDiffusionPipeline):
    """SDXL + the interaction module; accepts the official XL pipeline's argument names."""

    model_cpu_offload_seq = "text_encoder->text_encoder_2->unet->vae"

    def __init__(
        self,
        vae,
        text_encoder: CLIPTextModel,
        text_encoder_2: CLIPTextModelWithProjection,
        tokenizer: CLIPTokenizer,
        tokenizer_2: CLIPTokenizer,
        unet,
        scheduler,
    ):
        super().__init__(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.register_modules(text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2)
        self.text = DualTextEncoder(text_encoder, text_encoder_2, tokenizer, tokenizer_2)
        self.phrase_encoder = DualPhraseEncoder(self.text)
        self._micro = MicroConditioning()

    @staticmethod
    def backbone_components(backbone: XLBackbone) -> dict[str, Any]:
        return {**InteractDiffusionPipeline.backbone_components(backbone),
                "text_encoder_2": backbone.text_encoder_2, "tokenizer_2": backbone.tokenizer_2}

    def _place(self, device, dtype) -> InteractDiffusionXLPipeline:
        super()._place(device, dtype)
        dtype = resolve_dtype(dtype)
        self.text_encoder_2.to(device=device, dtype=dtype).eval()
        return self

    def encode_prompt(self, prompts: list[str], device, clip_skip: int | None = None) -> torch.Tensor:
        """Caption tokens ([B, 77, 2048] at SDXL size): both encoders' penultimate layers side by side."""
        if clip_skip is not None:
            raise ValueError("clip_skip is not supported by the XL pipeline")
        return self.text.encode_prompt(prompts, device)[0].to(self.unet.dtype)

    def caption_conditions(
        self, captions: list[str], n: int, do_cfg: bool, device, clip_skip: int | None = None,
        negative_prompt: str | list[str] | None = None, prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None, size: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        """Tokens, pooled caption and ``time_ids`` for ``[negatives; prompts]``, as the official pipeline:
        with no negative prompt (and no negative embeddings) the negative half is all zeros."""
        if clip_skip is not None:
            raise ValueError("clip_skip is not supported by the XL pipeline")
        micro = self._micro
        dtype = self.unet.dtype
        tokens, pooled = self._encode(captions, micro.prompt_2, prompt_embeds, micro.pooled_prompt_embeds, device)
        time_ids = torch.tensor([micro.time_ids(size)] * len(captions), dtype=dtype, device=device)
        if do_cfg:
            if negative_prompt_embeds is None and negative_prompt is None:
                neg_tokens, neg_pooled = torch.zeros_like(tokens), torch.zeros_like(pooled)
            else:
                negatives = _negatives(negative_prompt, len(captions))
                neg_tokens, neg_pooled = self._encode(
                    negatives, micro.negative_prompt_2, negative_prompt_embeds, micro.negative_pooled_prompt_embeds,
                    device,
                )
            neg_time_ids = torch.tensor([micro.time_ids(size, negative=True)] * len(captions), dtype=dtype,
                                        device=device)
            tokens, pooled = torch.cat([neg_tokens, tokens]), torch.cat([neg_pooled, pooled])
            time_ids = torch.cat([neg_time_ids, time_ids])
        repeat = {"repeats": n, "dim": 0}
        return {
            "encoder_hidden_states": tokens.to(device, dtype).repeat_interleave(**repeat),
            "added_cond_kwargs": {
                "text_embeds": pooled.to(device, dtype).repeat_interleave(**repeat),
                "time_ids": time_ids.repeat_interleave(**repeat),
            },
        }

    def _encode(self, captions, captions_2, embeds, pooled, device) -> tuple[torch.Tensor, torch.Tensor]:
        if embeds is not None:
            if pooled is None:
                raise ValueError("prompt_embeds need pooled_prompt_embeds (and negative ones their negative pooled)")
            return embeds.to(device), pooled.to(device)
        if captions_2 is None:
            return self.text.encode_prompt(captions, device)
        second = [captions_2] * len(captions) if isinstance(captions_2, str) else list(captions_2)
        if len(second) != len(captions):
            raise ValueError(f"{len(second)} second prompts for {len(captions)} prompts")
        tokens_1, _ = self.text.encode_prompt(captions, device)
        tokens_2, pooled_2 = self.text.encode_prompt(second, device)
        width_1 = self.text_encoder.config.hidden_size
        return torch.cat([tokens_1[..., :width_1], tokens_2[..., width_1:]], dim=-1), pooled_2

    @torch.no_grad()
    def __call__(
        self,
        scenes=None,
        prompt: str | list[str] | None = None,
        prompt_2: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 5.0,
        interactdiffusion_scheduled_sampling_beta: float = 1.0,
        negative_prompt: str | list[str] | None = None,
        negative_prompt_2: str | list[str] | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        original_size: Sequence[int] | None = None,
        crops_coords_top_left: Sequence[int] = (0, 0),
        target_size: Sequence[int] | None = None,
        negative_original_size: Sequence[int] | None = None,
        negative_crops_coords_top_left: Sequence[int] = (0, 0),
        negative_target_size: Sequence[int] | None = None,
        **kwargs,
    ):
        """As ``InteractDiffusionPipeline.__call__`` with the official XL pipeline's defaults and its
        SDXL arguments (``prompt_2``, pooled embeddings, sizes and crops for micro-conditioning)."""
        as_pair = lambda v: tuple(int(x) for x in v) if v is not None else None  # noqa: E731
        self._micro = MicroConditioning(
            as_pair(original_size), as_pair(crops_coords_top_left), as_pair(target_size),
            as_pair(negative_original_size), as_pair(negative_crops_coords_top_left), as_pair(negative_target_size),
            prompt_2, negative_prompt_2, pooled_prompt_embeds, negative_pooled_prompt_embeds,
        )
        try:
            return super().__call__(
                scenes, prompt=prompt, height=height, width=width, num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                interactdiffusion_scheduled_sampling_beta=interactdiffusion_scheduled_sampling_beta,
                negative_prompt=negative_prompt, **kwargs,
            )
        finally:
            self._micro = MicroConditioning()


def load_xl_pipeline_folder(
    folder: Path, variant: str | None = None, scheduler=None, grounding: dict[str, Any] | None = None,
) -> InteractDiffusionXLPipeline:
    """An XL pipeline folder: our ``save_pretrained`` or the official XL release (its UNet possibly sharded).

    The official XL projection always has a 32-row instance table; without our ``grounding_config.json``
    the tokenizer is built that way (widths follow the UNet: 2048 at SDXL size).
    """
    from .pipelines.loading import GROUNDING_CONFIG_NAME, _load_grounded_unet, _require

    if grounding is None and not (folder / "unet" / GROUNDING_CONFIG_NAME).is_file():
        grounding = {"kind": "interactdiffusion", "max_interactions": XL_GROUNDING["max_interactions"]}
    unet = _load_grounded_unet(folder / "unet", variant, grounding)
    part_kwargs: dict[str, Any] = {"local_files_only": True, "dtype": torch.float32}
    if variant:
        part_kwargs["variant"] = variant
    for part, what in (("vae", "the VAE"), ("text_encoder", "the CLIP-L text encoder"),
                       ("text_encoder_2", "the bigG text encoder"), ("tokenizer", "the first tokenizer"),
                       ("tokenizer_2", "the second tokenizer")):
        _require(folder / part, what)
    scheduler_file = folder / "scheduler" / "scheduler_config.json"
    _require(scheduler_file, "the scheduler")
    saved = json.loads(scheduler_file.read_text(encoding="utf-8"))
    return InteractDiffusionXLPipeline(
        vae=load_autoencoder(folder / "vae", **({"variant": variant} if variant else {})),
        text_encoder=CLIPTextModel.from_pretrained(folder / "text_encoder", **part_kwargs),
        text_encoder_2=CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2", **part_kwargs),
        tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True),
        tokenizer_2=CLIPTokenizer.from_pretrained(folder / "tokenizer_2", local_files_only=True),
        unet=unet,
        scheduler=make_scheduler(scheduler if scheduler is not None else saved.get("_class_name", "plms"), saved),
    )
