"""The one call into the pipeline: generate, eval, the training callbacks and the app all go through
:func:`call_pipeline`, so a setting means the same thing (and gives the same image) everywhere."""

from __future__ import annotations

from collections.abc import Sequence

from ..scene import Scene
from .settings import InputError, Settings


def call_pipeline(pipe, scenes: Sequence[Scene], size: tuple[int, int], *, steps: int, guidance_scale: float,
                  beta: float, seed: int | None, negative_prompt: str = "", eta: float = 0.0,
                  scheduled_sampling: Sequence[float] | None = None, images_per_scene: int = 1,
                  output_type: str = "np"):
    """The pipeline's output for ``scenes`` at ``size`` = (height, width); ``scheduled_sampling`` is the
    official [full, decay, off] triple (None: derived from ``beta``)."""
    height, width = size
    return pipe(
        list(scenes), height=height, width=width, num_inference_steps=steps, guidance_scale=guidance_scale,
        interactdiffusion_scheduled_sampling_beta=beta, interactdiffusion_scheduled_sampling=scheduled_sampling,
        negative_prompt=negative_prompt or None,  # none: SDXL zeroes the negative half
        eta=eta, seed=seed, num_images_per_prompt=images_per_scene, output_type=output_type,
    )


def sample(pipe, scenes: Sequence[Scene], settings: Settings, size: tuple[int, int], images_per_scene: int = 1):
    """One pipeline call with the recorded settings (also the app's Generate: the same image per scene);
    PIL images, after checking they are finite."""
    scenes = list(scenes)
    out = call_pipeline(
        pipe, scenes, size, steps=settings.steps, guidance_scale=settings.guidance_scale, beta=settings.beta,
        seed=settings.seed, negative_prompt=settings.negative_prompt, eta=settings.eta,
        images_per_scene=images_per_scene,
    )
    out.images = finite_images(pipe, out.images, scenes, settings, images_per_scene)
    return out


def finite_images(pipe, arrays, scenes: Sequence[Scene], settings: Settings, per_scene: int = 1) -> list:
    """PIL images of the pipeline's float output, after checking it is finite: NaN weights (or an fp16
    overflow) would otherwise be saved as black images and recorded as done."""
    import numpy as np

    for k, array in enumerate(arrays):
        scene = scenes[k // per_scene]
        if not np.isfinite(array).all():
            raise InputError(
                f"scene {scene.id!r}: the image has non-finite values (NaN/inf) with weights "
                f"{settings.weights or '(none)'} on backbone {settings.backbone} at {settings.precision}; "
                "check those weights (or try precision=fp32); nothing was recorded for this scene"
            )
    return pipe.numpy_to_pil(np.asarray(arrays))
