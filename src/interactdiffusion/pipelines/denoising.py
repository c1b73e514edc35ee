"""The steps of ``InteractDiffusionPipeline.__call__``: scenes and seeds, initial noise, the loop, decoding.

Functions of the pipeline (``pipe``) rather than methods so the class stays readable; they call the
pipeline's own methods and components, so the SDXL sibling's overrides apply unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from ..models.unet import fusers
from ..scene import Scene, SceneError
from ..scheduled_sampling import fuser_scale
from .official_arguments import _official_noise


def image_seed(scene_seed: int, index: int) -> int:
    """Seed of the ``index``-th image of a scene: the scene's own seed for the first image."""
    if index == 0:
        return scene_seed
    return (scene_seed * 1_000_003 + index) % (2**63 - 1)


def resolve_scenes(
    pipe, scenes, prompt, prompt_embeds, subject_phrases, object_phrases, action_phrases, subject_boxes,
    object_boxes, n: int, generator, seed: int | None, max_n: int,
) -> tuple[bool, list[Scene], list[int | None], Any]:
    """``(official, scenes, per-image seeds, the scheduler's generator(s))`` of a call's arguments."""
    official = scenes is None
    if official:
        if prompt is None and prompt_embeds is None:
            raise ValueError("pass scenes, or prompt (or prompt_embeds) with the interactdiffusion_* arguments")
        if prompt is None:
            prompts = [""] * prompt_embeds.shape[0]
        else:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        scene_list = pipe.scenes_from_official_arguments(
            prompts,
            subject_phrases,
            object_phrases,
            action_phrases,
            subject_boxes,
            object_boxes,
            max_interactions=max_n,
        )
        step_generator = generator
        seeds: list[int | None] = [None] * (len(scene_list) * n)
        if isinstance(generator, list) and len(generator) != len(scene_list) * n:
            raise ValueError(f"{len(generator)} generators for {len(scene_list) * n} images")
    else:
        if prompt is not None or subject_phrases is not None:
            raise ValueError("pass either scenes or the official prompt/interactdiffusion_* arguments, not both")
        scene_list = _as_scenes(scenes)
        if seed is None:
            seed = generator.initial_seed() if isinstance(generator, torch.Generator) else 0
        seeds = [image_seed(s.seed_for(seed), k) for s in scene_list for k in range(n)]
        step_generator = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    for scene in scene_list:
        if len(scene.interactions) > max_n:
            raise SceneError(scene.id, "interactions", f"{len(scene.interactions)} > {max_n} interactions")
    return official, scene_list, seeds, step_generator


def initial_latents(pipe, latents, shape, official: bool, generator, step_generator, device) -> torch.Tensor:
    """The starting latents: given, the official sampler's noise, or one CPU draw per image's generator."""
    if latents is None:
        if official:
            latents = _official_noise(shape, generator)
        else:
            latents = torch.cat([torch.randn((1, *shape[1:]), generator=g) for g in step_generator])
    elif tuple(latents.shape) != shape:
        raise ValueError(f"latents have shape {tuple(latents.shape)}, expected {shape}")
    return latents.to(device=device, dtype=torch.float32) * pipe.scheduler.init_noise_sigma


def denoise(
    pipe, latents: torch.Tensor, timesteps, step_scales: list[float], objs, conditions: dict[str, Any],
    do_cfg: bool, guidance_scale: float, step_kwargs: dict[str, Any], cross_attention_kwargs,
    callback: Callable[[int, int, torch.Tensor], None] | None, callback_steps: int,
) -> torch.Tensor:
    """The denoising loop, with scheduled sampling of the fusers (their state restored on exit)."""
    saved_states = [f.enabled for f in fusers(pipe.unet)]
    try:
        with pipe.progress_bar(total=len(timesteps)) as bar:
            for i, t in enumerate(timesteps):
                extra = dict(cross_attention_kwargs or {})
                if step_scales[i] > 0:
                    extra["gligen"] = {"objs": objs}
                model_input = torch.cat([latents] * 2) if do_cfg else latents
                model_input = pipe.scheduler.scale_model_input(model_input, t)
                with fuser_scale(pipe.unet, step_scales[i]):
                    noise_pred = pipe.unet(
                        model_input.to(pipe.unet.dtype),
                        t,
                        **conditions,
                        cross_attention_kwargs=extra or None,
                        return_dict=False,
                    )[0].float()
                if do_cfg:
                    uncond, cond = noise_pred.chunk(2)
                    noise_pred = uncond + guidance_scale * (cond - uncond)
                latents = pipe.scheduler.step(noise_pred, t, latents, **step_kwargs, return_dict=False)[0]
                bar.update()
                if callback is not None and i % callback_steps == 0:
                    callback(i // getattr(pipe.scheduler, "order", 1), t, latents)
    finally:
        for fuser, state in zip(fusers(pipe.unet), saved_states):
            fuser.enabled = state
    return latents


def decode(pipe, latents: torch.Tensor, output_type: str, batch: int):
    """Latents → images in ``output_type`` (``latent`` returns them as they are)."""
    if output_type == "latent":
        return latents
    decoded = pipe.vae.decode(
        (latents / pipe.vae.config.scaling_factor).to(pipe.vae.dtype), return_dict=False
    )[0]
    return pipe.image_processor.postprocess(
        decoded.float(), output_type=output_type, do_denormalize=[True] * batch
    )


def step_kwargs(scheduler, generator, eta: float) -> dict[str, Any]:
    """The ``eta`` / ``generator`` arguments the scheduler's ``step`` accepts."""
    accepted = set(inspect.signature(scheduler.step).parameters)
    kwargs: dict[str, Any] = {}
    if "eta" in accepted:
        kwargs["eta"] = eta
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs


def _as_scenes(scenes) -> list[Scene]:
    if isinstance(scenes, (Scene, dict)):
        scenes = [scenes]
    out = []
    for k, s in enumerate(scenes):
        out.append(s if isinstance(s, Scene) else Scene.from_dict(s, default_id=str(k)))
    return out
