"""Does an adapter use its grounding, and which part of it? Counterfactual denoising losses.

The mAP of generated images says nothing until an adapter both places and draws well; this probe
answers from the first hundred steps. Real images are noised to a timestep ``t`` and the UNet's
denoising loss (its own target: epsilon or v) is measured four times with the same noise:

- ``true``: each scene's own grounding tokens;
- ``boxes_moved``: the same phrases on another scene's boxes (changes only *where*);
- ``shuffled``: another scene's grounding altogether (changes *what* and *where*);
- ``null``: the null grounding, what the unconditional branch of guidance sees.

An adapter that reads its boxes has ``true < boxes_moved``; one that has only learnt which classes are
in the image has ``true = boxes_moved < shuffled``; one that ignores its tokens has all four equal.
Run it with and without captions: with the caption naming every class, positions are the only thing
grounding can add.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from ..models.prediction_target import prediction_target
from ..scene import Scene

VARIANTS = ("true", "boxes_moved", "shuffled", "null")


def move_boxes(scenes: Sequence[Scene]) -> list[Scene]:
    """Each scene's phrases on the boxes of the next scene (cycling through that scene's interactions)."""
    if len(scenes) < 2:
        raise ValueError("moving boxes between scenes needs at least two scenes")
    moved = []
    for i, scene in enumerate(scenes):
        donor = scenes[(i + 1) % len(scenes)].interactions
        if not donor or not scene.interactions:
            raise ValueError(f"scene {scene.id!r} or its neighbour has no interactions to move boxes between")
        interactions = tuple(
            dataclasses.replace(it, subject_box=donor[k % len(donor)].subject_box, object_box=donor[k % len(donor)].object_box)
            for k, it in enumerate(scene.interactions)
        )
        moved.append(dataclasses.replace(scene, interactions=interactions))
    return moved


@torch.no_grad()
def probe_grounding(
    pipe,
    scenes: Sequence[Scene],
    images: torch.Tensor,
    timesteps: Sequence[int] = (950, 800, 600),
    *,
    captions: bool = True,
    seed: int = 0,
    batch_size: int = 32,
) -> dict[int, dict[str, float]]:
    """Mean denoising loss per timestep and grounding variant (see the module docstring).

    ``pipe``: an :class:`~interactdiffusion.pipeline.InteractDiffusionPipeline` with an adapter;
    ``images``: uint8 ``[B, 3, H, W]``, the real images of ``scenes`` at the resolution the UNet takes.
    """
    if len(scenes) != len(images):
        raise ValueError(f"{len(scenes)} scenes but {len(images)} images")
    device = pipe.unet.device
    dtype = pipe.unet.dtype
    kind = pipe.scheduler.config.prediction_type
    alphas = pipe.scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)
    moved = move_boxes(scenes)
    sums = {int(t): dict.fromkeys(VARIANTS, 0.0) for t in timesteps}
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, len(scenes), batch_size):
        part = list(scenes[start : start + batch_size])
        n = len(part)
        pixels = images[start : start + n].to(device=device, dtype=torch.float32) / 127.5 - 1.0
        latents = pipe.vae.encode(pixels.to(pipe.vae.dtype)).latent_dist.mean.float() * pipe.vae.config.scaling_factor
        text = pipe.encode_prompt([s.caption if captions else "" for s in part], device)
        true = pipe.grounding_tokens(part, device)
        tokens = {
            "true": true,
            "boxes_moved": pipe.grounding_tokens(moved[start : start + n], device),
            "shuffled": true.roll(1, 0) if n > 1 else pipe.grounding_tokens(moved[start : start + n], device),
            "null": pipe.null_grounding_tokens(n, device),
        }
        for t in timesteps:
            a, s = alphas[int(t)].sqrt(), (1 - alphas[int(t)]).sqrt()
            noise = torch.randn(latents.shape, generator=generator).to(device)
            noisy = (a * latents + s * noise).to(dtype)
            target = prediction_target(kind, latents, noise, a, s)
            step = torch.full((n,), int(t), device=device)
            for name, objs in tokens.items():
                prediction = pipe.unet(
                    noisy, step, encoder_hidden_states=text, cross_attention_kwargs={"gligen": {"objs": objs}}
                ).sample
                sums[int(t)][name] += float(((prediction.float() - target) ** 2).mean()) * n
    return {t: {name: total / len(scenes) for name, total in row.items()} for t, row in sums.items()}


def format_probe(results: dict[int, dict[str, float]]) -> str:
    """A markdown table: one row per timestep, the loss of each variant and the two gaps that matter."""
    lines = [
        "| t | true | boxes moved | shuffled | null | where gain (moved − true) | what gain (shuffled − moved) |",
        "|---|---|---|---|---|---|---|",
    ]
    for t, row in sorted(results.items(), reverse=True):
        lines.append(
            f"| {t} | {row['true']:.4f} | {row['boxes_moved']:.4f} | {row['shuffled']:.4f} | {row['null']:.4f} "
            f"| {row['boxes_moved'] - row['true']:+.4f} | {row['shuffled'] - row['boxes_moved']:+.4f} |"
        )
    return "\n".join(lines)
