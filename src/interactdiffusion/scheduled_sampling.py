"""Scheduled sampling: how strongly the fusers act at each denoising step (GLIGEN's ``alpha_generator``).

The official sampler takes a triple ``[full, decay, off]`` of fractions of the steps: the fusers act fully
for the first ``int(full·T)`` steps, then their output is scaled down linearly over ``int(decay·T)``
steps, and they are off for the rest. T is the sampler's step count (``num_inference_steps``: 50 for
the paper's PLMS). β is the shorthand ``[β, 0, 1-β]``. A scale s multiplies both gated residuals of a
fuser (``x + s·tanh(α)·attn(...)``, ``x + s·tanh(β)·ff(...)``) as the official ``set_alpha_scale`` does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch import nn

from .models.unet import fusers, set_fusers_enabled


def schedule_triple(beta: float, triple: Sequence[float] | None = None) -> tuple[float, float, float]:
    """The ``[full, decay, off]`` triple: ``triple`` when given, else ``[β, 0, 1-β]``; checked."""
    values = (float(beta), 0.0, 1.0 - float(beta)) if triple is None else tuple(float(v) for v in triple)
    if len(values) != 3 or any(v < 0 for v in values) or abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"scheduled sampling must be three non-negative fractions summing to 1, got {list(values)}")
    return values  # type: ignore[return-value]


def fuser_scales(triple: Sequence[float], num_steps: int) -> list[float]:
    """The scale of each of ``num_steps`` sampler steps, as the official ``alpha_generator`` makes them."""
    full, decay, _ = triple
    n_full, n_decay = int(full * num_steps), int(decay * num_steps)
    step = 1.0 / n_decay if n_decay else 0.0
    ramp = [k * step for k in reversed(range(n_decay))]  # np.arange(0, 1, 1/n)[::-1]
    return [1.0] * n_full + ramp + [0.0] * (num_steps - n_full - n_decay)


def sampler_step(iteration: int, num_iterations: int, num_steps: int) -> int:
    """The official sampler's step of a diffusers scheduler iteration. diffusers' PLMS runs one extra
    iteration at the start (the official sampler's first step evaluates the UNet twice): iterations 0
    and 1 are its step 0; multi-order schedulers spread their iterations evenly over the steps."""
    if num_iterations == num_steps + 1:
        return max(0, iteration - 1)
    return min(num_steps - 1, iteration * num_steps // max(num_iterations, 1))


def _scale_output(scale: float):
    def hook(_module, _inputs, output):
        return output * scale

    return hook


@contextmanager
def fuser_scale(unet: nn.Module, scale: float) -> Iterator[None]:
    """Fusers on at full strength (1), off (0: exactly the plain UNet), or scaled in between."""
    set_fusers_enabled(unet, scale > 0)
    handles = []
    if 0 < scale < 1:
        for fuser in fusers(unet):
            handles += [fuser.attn.register_forward_hook(_scale_output(scale)),
                        fuser.ff.register_forward_hook(_scale_output(scale))]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
