"""An exponential moving average of the adapter weights only (the frozen backbone never changes)."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import contextmanager

import torch
from torch import nn


class AdapterEMA:
    """``shadow = decay * shadow + (1 - decay) * param`` for the named trainable parameters, in fp32.

    ``warmup`` uses the usual ``min(decay, (1 + n) / (10 + n))`` so early averages are not dominated
    by the random initial weights.

    Why not ``diffusers.training_utils.EMAModel``: it keeps an unnamed list of shadows in the order of the
    parameters it was given, while checkpoints, ``swapped_in`` for the sample/eval callbacks and the
    adapter export address the shadows by parameter name (and only the adapter's: the frozen UNet has
    none); its decay schedule also differs by one step (the first update copies the weights, then
    ``(1 + n - 1) / (10 + n - 1)``), so adopting it would change every existing run's EMA on resume.
    """

    def __init__(self, named_parameters: Iterable[tuple[str, nn.Parameter]], decay: float = 0.9999, warmup: bool = True):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = warmup
        self.num_updates = 0
        self.params: dict[str, nn.Parameter] = dict(named_parameters)
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().clone().float() for name, p in self.params.items()
        }

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self) -> None:
        decay = self.current_decay()
        for name, param in self.params.items():
            shadow = self.shadow[name]
            shadow.lerp_(param.detach().to(shadow.device, torch.float32), 1.0 - decay)
        self.num_updates += 1

    def to(self, device) -> AdapterEMA:
        self.shadow = {k: v.to(device) for k, v in self.shadow.items()}
        return self

    @contextmanager
    def swapped_in(self):
        """Temporarily load the averaged weights into the model (for sampling or export)."""
        backup = {n: p.detach().clone() for n, p in self.params.items()}
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(self.shadow[n].to(p.device, p.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in self.params.items():
                    p.copy_(backup[n])

    def state_dict(self) -> dict:
        return {
            "decay": self.decay,
            "num_updates": self.num_updates,
            "shadow": {k: v.detach().cpu() for k, v in self.shadow.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) - set(state["shadow"])
        if missing:
            raise KeyError(f"EMA state lacks {len(missing)} adapter weights, e.g. {sorted(missing)[:3]}")
        self.num_updates = int(state["num_updates"])
        for name, value in state["shadow"].items():
            if name in self.shadow:
                if value.shape != self.shadow[name].shape:
                    raise ValueError(
                        f"EMA weight {name}: checkpoint {tuple(value.shape)} vs model {tuple(self.shadow[name].shape)}"
                    )
                self.shadow[name].copy_(value)
