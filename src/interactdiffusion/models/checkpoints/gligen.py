"""GLIGEN text-box weights as the initialisation of an InteractDiffusion adapter."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..unet import adapter_state_dict, is_adapter_key
from .reading import read_adapter_weights
from .safe_load import CheckpointError, StateDict

log = logging.getLogger(__name__)

# -- GLIGEN as initialisation -----------------------------------------------------------------------------
_FROM_GLIGEN = {  # target prefix -> GLIGEN prefix it is copied from
    "position_net.linear_action.": "position_net.linears.",
    "position_net.null_action_feature": "position_net.null_positive_feature",
}
NEW_EMBEDDINGS = ("position_net.interaction_embedding.emb.weight", "position_net.position_embedding.emb.weight")
NEW_EMBEDDING_STD = 0.02


@dataclass
class InitReport:
    """What an initialisation from GLIGEN did, key by key."""

    source: str
    copied: list[str] = field(default_factory=list)
    derived: dict[str, str] = field(default_factory=dict)  # new key -> the GLIGEN key it copies
    created: list[str] = field(default_factory=list)  # drawn from N(0, 0.02)
    ignored: list[str] = field(default_factory=list)  # in the file, not used by the target

    def __str__(self) -> str:
        fusers = sum(".fuser." in k for k in self.copied)
        lines = [
            f"initialised the adapter from GLIGEN weights {self.source}:",
            f"  copied as-is: {len(self.copied)} keys ({fusers} fuser keys incl. their alphas, "
            f"{len(self.copied) - fusers} position_net keys)",
        ]
        lines += [f"  copied {src} -> {dst}" for dst, src in self.derived.items()]
        lines += [f"  created {k} ~ N(0, {NEW_EMBEDDING_STD})" for k in self.created]
        if self.ignored:
            lines.append(f"  ignored (not in this model): {', '.join(self.ignored)}")
        return "\n".join(lines)


def _gligen_source(key: str) -> str | None:
    for target, source in _FROM_GLIGEN.items():
        if key.startswith(target):
            return source + key[len(target):]
    return None


def _default_target_shapes(gligen: Mapping[str, torch.Tensor], max_interactions: int = 30) -> dict[str, torch.Size]:
    """The full InteractDiffusion key set grown from a GLIGEN adapter (when no target UNet is given)."""
    shapes = {k: v.shape for k, v in gligen.items()}
    for key, value in gligen.items():
        for target, source in _FROM_GLIGEN.items():
            if key.startswith(source):
                shapes[target + key[len(source):]] = value.shape
    out_dim = gligen["position_net.linears.4.weight"].shape[0]
    shapes[NEW_EMBEDDINGS[0]] = torch.Size([max_interactions, out_dim])
    shapes[NEW_EMBEDDINGS[1]] = torch.Size([3, out_dim])
    return shapes


def init_from_gligen(state: str | Path | Mapping[str, torch.Tensor], target_unet: nn.Module | None = None,
                     seed: int = 0, source: str | None = None) -> tuple[StateDict, InitReport]:
    """GLIGEN text-box weights as the starting point of an InteractDiffusion adapter.

    ``state`` is a file or folder in any accepted format, or a diffusers-named state dict. The fusers
    (with their non-zero alphas) and GLIGEN's ``position_net`` are copied as-is; ``linear_action`` is
    an explicit copy of ``linears`` and ``null_action_feature`` of ``null_positive_feature``; the
    instance and role embeddings are drawn from N(0, 0.02) with ``seed``. The key set follows
    ``target_unet`` (so the ``gligen`` variant and the ablations get exactly their keys), or the
    full InteractDiffusion set when it is None. Unlike the official code, this does not depend on the
    file's name. The report is returned and logged.
    """
    if isinstance(state, (str, Path)):
        source = source or str(state)
        state = read_adapter_weights(state, target_unet)[1]
    source = source or "(state dict)"
    gligen = {k: v for k, v in state.items() if is_adapter_key(k)}
    if "position_net.linears.4.weight" not in gligen:
        raise CheckpointError(f"{source}: no GLIGEN text-box position_net (position_net.linears.*) found")
    if any(k.startswith("position_net.linear_action.") for k in gligen):
        raise CheckpointError(f"{source}: already has linear_action, so it is an InteractDiffusion adapter, not GLIGEN")
    if target_unet is not None:
        shapes = {k: v.shape for k, v in adapter_state_dict(target_unet).items()}
    else:
        shapes = _default_target_shapes(gligen)
    dtype = gligen["position_net.linears.4.weight"].dtype
    generator = torch.Generator().manual_seed(seed)
    report = InitReport(source)
    out: StateDict = {}
    for key in sorted(shapes):
        src = _gligen_source(key)
        if key in gligen:
            out[key] = gligen[key]
            report.copied.append(key)
        elif src is not None and src in gligen:
            out[key] = gligen[src].clone()
            report.derived[key] = src
        elif key in NEW_EMBEDDINGS:
            out[key] = (torch.randn(shapes[key], generator=generator) * NEW_EMBEDDING_STD).to(dtype)
            report.created.append(key)
        else:
            raise CheckpointError(f"{source}: the GLIGEN weights have nothing to initialise {key} from")
    used = set(report.copied) | set(report.derived.values())
    report.ignored = sorted(set(gligen) - used)
    log.info("%s", report)
    return out, report


def is_gligen_adapter(state: Mapping[str, torch.Tensor]) -> bool:
    """GLIGEN's text-box ``position_net`` has ``linears`` but no ``linear_action``."""
    return "position_net.linears.0.weight" in state and "position_net.linear_action.0.weight" not in state
