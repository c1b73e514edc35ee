"""Inference: scenes (or the official diffusers arguments) → images.

``InteractDiffusionPipeline`` is a diffusers ``DiffusionPipeline`` (components vae, text_encoder,
tokenizer, unet, scheduler). Per call it

- embeds every phrase once (memoised ``PhraseEncoder``) and runs the grounding tokenizer ONCE for the
  conditional and once for the null input; the tokens go to every step as ``{"gligen": {"objs": ...}}``;
- runs classifier-free guidance in one batched UNet call per step: the unconditional half is the negative
  prompt with NULL grounding (REFERENCE §3); ``guidance_scale <= 1`` skips that half entirely;
- keeps the fusers on for the first ``int(β·T)`` of the T sampler steps, or follows the official
  ``[full, decay, off]`` triple (scheduled sampling), and restores their state on exit, exception included;
- draws each scene's initial noise (and any per-step noise of a stochastic scheduler) on the CPU from its
  own generator seeded by ``scene.seed_for(base_seed)``, so an image never depends on batch size, order
  or device count.

The pieces around the class live in ``interactdiffusion.pipelines`` (schedulers and precisions, the
official-argument adapter, loading, the steps of a call) and are re-exported here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.image_processor import VaeImageProcessor
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from transformers import CLIPTextModel, CLIPTokenizer

from .atomic import check_folder, folder_atomic
from .conditioning import PhraseIndex
from .models.backbone import Backbone, PhraseEncoder
from .models.space_to_depth import downscale_factor
from .pipelines.denoising import decode, denoise, image_seed, initial_latents, resolve_scenes
from .pipelines.denoising import step_kwargs as _step_kwargs
from .pipelines.grounding_tokens import grounding_tokens, null_grounding_tokens
from .pipelines.loading import (
    GROUNDING_CONFIG_NAME,
    grounding_config_of,
    is_pipeline_folder,
    load_pipeline,
    load_sd_pipeline_folder,
    load_weights,
)
from .pipelines.official_arguments import (
    IGNORED_LOAD_ARGUMENTS,
    scenes_from_official_arguments,
)
from .pipelines.schedulers import PRECISIONS, SCHEDULER_PRESETS, make_scheduler, resolve_dtype
from .scene import MAX_INTERACTIONS, Scene
from .scheduled_sampling import fuser_scales, sampler_step, schedule_triple

# The paper's evaluation protocol (REFERENCE §3).
PAPER_NEGATIVE_PROMPT = (
    "longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, cropped, "
    "worst quality, low quality"
)
PAPER_SEED = 489

__all__ = [  # what this module exported before its pieces moved to ``pipelines``
    "GROUNDING_CONFIG_NAME", "IGNORED_LOAD_ARGUMENTS", "PAPER_NEGATIVE_PROMPT", "PAPER_SEED", "PRECISIONS",
    "SCHEDULER_PRESETS", "InteractDiffusionPipeline", "InteractDiffusionPipelineOutput", "grounding_config_of",
    "image_seed", "is_pipeline_folder", "load_pipeline", "load_weights", "make_scheduler", "resolve_dtype",
    "scenes_from_official_arguments",
]


@dataclass
class InteractDiffusionPipelineOutput(BaseOutput):
    """``images`` as diffusers returns them; ``seeds`` the per-image noise seeds (None when not seeded)."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    nsfw_content_detected: list[bool] | None = None
    seeds: list[int | None] | None = None


class InteractDiffusionPipeline(DiffusionPipeline):
    """Stable Diffusion + the interaction module, following diffusers' pipeline conventions."""

    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: SchedulerMixin,
    ):
        super().__init__()
        if not callable(getattr(unet, "position_net", None)):
            raise TypeError("the UNet has no position_net: build it with models.unet.build_grounded_unet")
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.vae_scale_factor = downscale_factor(self.vae)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        self.phrase_encoder = PhraseEncoder(text_encoder, tokenizer)
        self.phrase_index = PhraseIndex()

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_backbone(
        cls,
        backbone: Backbone,
        weights: str | Path | None = None,
        scheduler: str | SchedulerMixin = "plms",
        precision: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> InteractDiffusionPipeline:
        """Wrap a ``Backbone`` (its grounded UNet included); the scheduler preset uses its noise schedule.

        ``weights`` (optional) are loaded into the backbone first, in place: see ``load_weights``.
        An SDXL backbone (two text encoders) gets the XL sibling, ``pipeline_xl.InteractDiffusionXLPipeline``.
        """
        if cls is InteractDiffusionPipeline and getattr(backbone, "text_encoder_2", None) is not None:
            from .pipeline_xl import InteractDiffusionXLPipeline

            return InteractDiffusionXLPipeline.from_backbone(backbone, weights, scheduler, precision, device)
        if weights is not None:
            load_weights(backbone, weights)
        pipe = cls(**cls.backbone_components(backbone),
                   scheduler=make_scheduler(scheduler, dict(backbone.scheduler.config)))
        return pipe._place(device, precision)

    @staticmethod
    def backbone_components(backbone: Backbone) -> dict[str, Any]:
        """The pipeline's components taken from a backbone (the scheduler apart)."""
        return {"vae": backbone.vae, "text_encoder": backbone.text_encoder, "tokenizer": backbone.tokenizer,
                "unet": backbone.unet}

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        torch_dtype: torch.dtype | None = None,
        variant: str | None = None,
        scheduler: str | SchedulerMixin | None = None,
        grounding: dict[str, Any] | None = None,
        precision: str | None = None,
        device: str | torch.device | None = None,
        **kwargs,
    ) -> InteractDiffusionPipeline:
        """Load a pipeline folder: one written by ``save_pretrained`` or the official diffusers release.

        Local folders only (nothing downloads). The UNet is rebuilt with gated blocks and our
        ``position_net`` from ``unet/grounding_config.json`` (absent in the official release: then the
        default InteractDiffusion tokenizer, whose key layout equals the official one), and every weight
        must load: a missing or unexpected key is an error, never a silently fresh adapter.
        """
        unknown = sorted(set(kwargs) - IGNORED_LOAD_ARGUMENTS)
        if unknown:
            raise TypeError(f"InteractDiffusionPipeline.from_pretrained got unsupported arguments: {', '.join(unknown)}")
        folder = Path(pretrained_model_name_or_path).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(
                f"pipeline folder not found: {folder} (nothing is downloaded: pass a local folder written by "
                "save_pretrained or a local copy of the official diffusers release)"
            )
        check_folder(folder)  # a marker that does not match its files: an interrupted or damaged copy
        dtype = torch_dtype if torch_dtype is not None else resolve_dtype(precision)
        if (folder / "text_encoder_2").is_dir():  # an SDXL pipeline: InteractDiffusionXLPipeline
            from .pipeline_xl import load_xl_pipeline_folder

            return load_xl_pipeline_folder(folder, variant, scheduler, grounding)._place(device, dtype)
        return load_sd_pipeline_folder(cls, folder, variant, scheduler, grounding)._place(device, dtype)

    def save_pretrained(self, save_directory: str | Path, safe_serialization: bool = True, **kwargs) -> None:
        """diffusers' layout, plus ``unet/grounding_config.json`` so ``from_pretrained`` rebuilds our tokenizer.

        The folder is written beside and published whole with a completion marker (``atomic.folder_atomic``):
        a crash leaves the previous folder or none, never a partial one under the name.
        """
        with folder_atomic(Path(save_directory)) as staging:
            super().save_pretrained(staging, safe_serialization=safe_serialization, **kwargs)
            config = grounding_config_of(self.unet.position_net)
            (staging / "unet" / GROUNDING_CONFIG_NAME).write_text(
                json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
            )

    def _place(self, device, dtype) -> InteractDiffusionPipeline:
        dtype = resolve_dtype(dtype)
        quiet = logging.getLogger("diffusers.models.modeling_utils")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # its "modules to keep in float32: []" notice does not apply here
        try:
            for module in (self.unet, self.vae, self.text_encoder):
                if device is not None:
                    module.to(device=device)
                if dtype is not None and module.dtype != dtype:
                    module.to(dtype=dtype)
                module.eval()
        finally:
            quiet.setLevel(level)
        return self

    # -- phrases -----------------------------------------------------------------------------------
    def preload_phrases(self, table: dict[str, torch.Tensor]) -> None:
        """Seed the phrase memo from a cache table (phrase → pooled CLIP vector)."""
        dim = self.phrase_encoder.dim
        bad = [p for p, v in table.items() if tuple(v.shape) != (dim,)]
        if bad:
            raise ValueError(
                f"phrase cache does not fit this text encoder: {bad[0]!r} has shape "
                f"{tuple(table[bad[0]].shape)}, expected ({dim},)"
            )
        self.phrase_encoder.preload(table)

    def encode_phrases(self, phrases: Sequence[str]) -> torch.Tensor:
        """Embed (and memoise) phrases; call it once with every phrase of a job for batch-free results."""
        return self.phrase_encoder(list(phrases))

    def phrase_table(self) -> dict[str, torch.Tensor]:
        return self.phrase_encoder.table()

    # -- the pieces of a call ----------------------------------------------------------------------
    def encode_prompt(self, prompts: list[str], device, clip_skip: int | None = None) -> torch.Tensor:
        """CLIP hidden states of each prompt ([B, 77, D]), exactly as diffusers' SD pipeline computes them."""
        inputs = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        ids = inputs.input_ids.to(device)
        mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            mask = inputs.attention_mask.to(device)
        if clip_skip is None:
            embeds = self.text_encoder(ids, attention_mask=mask)[0]
        else:
            hidden = self.text_encoder(ids, attention_mask=mask, output_hidden_states=True).hidden_states
            embeds = self.text_encoder.text_model.final_layer_norm(hidden[-(clip_skip + 1)])
        return embeds.to(self.unet.dtype)

    def caption_conditions(
        self, captions: list[str], n: int, do_cfg: bool, device, clip_skip: int | None = None,
        negative_prompt: str | list[str] | None = None, prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None, size: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        """The UNet's caption inputs for a call, each caption repeated ``n`` times and, under guidance,
        ``[negatives; prompts]``. SD-1.x: ``encoder_hidden_states``; SDXL adds ``added_cond_kwargs``."""
        if prompt_embeds is None:
            prompt_embeds = self.encode_prompt(captions, device, clip_skip)
        prompt_embeds = prompt_embeds.to(device, self.unet.dtype).repeat_interleave(n, dim=0)
        if not do_cfg:
            return {"encoder_hidden_states": prompt_embeds}
        if negative_prompt_embeds is None:
            negative_prompt_embeds = self.encode_prompt(_negatives(negative_prompt, len(captions)), device, clip_skip)
        negative_prompt_embeds = negative_prompt_embeds.to(device, self.unet.dtype).repeat_interleave(n, dim=0)
        return {"encoder_hidden_states": torch.cat([negative_prompt_embeds, prompt_embeds])}

    def grounding_tokens(self, scenes: Sequence[Scene], device) -> torch.Tensor:
        """The tokenizer's output for a batch of scenes ([B, tokens, D]), computed once per call."""
        return grounding_tokens(self, scenes, device)

    def null_grounding_tokens(self, batch_size: int, device) -> torch.Tensor:
        """Tokens of the "no grounding" input (masks 0): the unconditional branch of guidance."""
        return null_grounding_tokens(self, batch_size, device)

    def check_size(self, height: int, width: int) -> None:
        multiple = self.vae_scale_factor
        if height % multiple or width % multiple or height <= 0 or width <= 0:
            raise ValueError(f"height and width must be positive multiples of {multiple}, got {height}x{width}")

    # -- official-argument adapter -----------------------------------------------------------------
    scenes_from_official_arguments = staticmethod(scenes_from_official_arguments)

    # -- generation --------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        scenes: Scene | Sequence[Scene] | Sequence[dict] | str | list[str] | None = None,
        prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        interactdiffusion_scheduled_sampling_beta: float = 0.3,
        interactdiffusion_scheduled_sampling: Sequence[float] | None = None,
        interactdiffusion_subject_phrases: list[str] | list[list[str]] | None = None,
        interactdiffusion_object_phrases: list[str] | list[list[str]] | None = None,
        interactdiffusion_action_phrases: list[str] | list[list[str]] | None = None,
        interactdiffusion_subject_boxes: list[list[float]] | list[list[list[float]]] | None = None,
        interactdiffusion_object_boxes: list[list[float]] | list[list[list[float]]] | None = None,
        interactdiffusion_inpaint_image: PIL.Image.Image | None = None,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback: Callable[[int, int, torch.Tensor], None] | None = None,
        callback_steps: int = 1,
        cross_attention_kwargs: dict[str, Any] | None = None,
        clip_skip: int | None = None,
        seed: int | None = None,
    ):
        """Generate one image per scene (or per prompt), ``num_images_per_prompt`` times each.

        Two ways in. ``scenes``: a ``Scene``, a list of them (or their dicts); each image's noise comes
        from ``scene.seed_for(seed)`` (``seed`` defaults to ``generator.initial_seed()``, else 0). Or the
        official diffusers arguments (``prompt`` + ``interactdiffusion_*``), with diffusers' generator
        semantics. ``interactdiffusion_scheduled_sampling_beta`` keeps the official default 0.3; the
        paper's evaluation uses 1.0. ``interactdiffusion_scheduled_sampling``: the official sampler's
        ``[full, decay, off]`` triple (``scheduled_sampling.py``), instead of β's ``[β, 0, 1-β]``. Returns ``InteractDiffusionPipelineOutput`` (``.images``: PIL by
        default, ``np``, ``pt`` or ``latent``) or ``(images, None)`` with ``return_dict=False``.
        """
        if interactdiffusion_inpaint_image is not None:
            raise NotImplementedError("interactdiffusion_inpaint_image (grounded inpainting) is not supported")
        if isinstance(scenes, str) or (
            isinstance(scenes, (list, tuple)) and scenes and all(isinstance(s, str) for s in scenes)
        ):
            if prompt is not None:
                raise ValueError("pass the prompt once: positionally or as prompt=")
            scenes, prompt = None, scenes
        beta = float(interactdiffusion_scheduled_sampling_beta)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"interactdiffusion_scheduled_sampling_beta must be in [0, 1], got {beta}")
        triple = schedule_triple(beta, interactdiffusion_scheduled_sampling)
        if num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be >= 1, got {num_images_per_prompt}")
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"output_type must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}")

        device = self._execution_device
        height = height or self.unet.config.sample_size * self.vae_scale_factor
        width = width or self.unet.config.sample_size * self.vae_scale_factor
        self.check_size(height, width)
        n = num_images_per_prompt
        position_net = self.unet.position_net
        max_n = getattr(position_net, "max_interactions", MAX_INTERACTIONS)

        # 1. scenes and the per-image noise generators
        official, scene_list, seeds, step_generator = resolve_scenes(
            self, scenes, prompt, prompt_embeds, interactdiffusion_subject_phrases, interactdiffusion_object_phrases,
            interactdiffusion_action_phrases, interactdiffusion_subject_boxes, interactdiffusion_object_boxes, n,
            generator, seed, max_n,
        )
        batch = len(scene_list) * n
        if batch == 0:
            raise ValueError("nothing to generate: no scenes")

        # 2. text
        do_cfg = guidance_scale > 1.0
        conditions = self.caption_conditions(
            [s.caption for s in scene_list], n, do_cfg, device, clip_skip, negative_prompt, prompt_embeds,
            negative_prompt_embeds, (height, width),
        )

        # 3. timesteps; grounding tokens once per call, never per step. The fusers' scale per iteration
        # counts steps as the official sampler does (diffusers' PLMS warm-up iteration is its step 0).
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        scales = fuser_scales(triple, num_inference_steps)
        step_scales = [scales[sampler_step(i, len(timesteps), num_inference_steps)] for i in range(len(timesteps))]
        objs = None
        if any(step_scales):
            objs = self.grounding_tokens(scene_list, device).repeat_interleave(n, dim=0)
            if do_cfg:
                objs = torch.cat([self.null_grounding_tokens(batch, device), objs])

        # 4. initial noise
        shape = (batch, self.unet.config.in_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        latents = initial_latents(self, latents, shape, official, generator, step_generator, device)
        step_kwargs = self._step_kwargs(step_generator, eta)

        # 5. denoising, with scheduled sampling of the fusers
        latents = denoise(
            self, latents, timesteps, step_scales, objs, conditions, do_cfg, guidance_scale, step_kwargs,
            cross_attention_kwargs, callback, callback_steps,
        )

        # 6. decode
        images = decode(self, latents, output_type, batch)
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, None
        return InteractDiffusionPipelineOutput(images=images, nsfw_content_detected=None, seeds=seeds)

    def _step_kwargs(self, generator, eta: float) -> dict[str, Any]:
        return _step_kwargs(self.scheduler, generator, eta)


# -- helpers ---------------------------------------------------------------------------------------
def _negatives(negative_prompt: str | list[str] | None, batch: int) -> list[str]:
    if negative_prompt is None:
        return [""] * batch
    if isinstance(negative_prompt, str):
        return [negative_prompt] * batch
    if len(negative_prompt) != batch:
        raise ValueError(f"{len(negative_prompt)} negative prompts for {batch} prompts")
    return list(negative_prompt)
