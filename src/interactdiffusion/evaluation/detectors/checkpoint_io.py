"""Reading the DETR-family checkpoints (QPIC, FGAHOI) without trusting them.

Their ``.pth`` files are pickles of ``{'model': state_dict, ..., 'args': argparse.Namespace}``. They are read
with ``weights_only=True`` allowing ``argparse.Namespace`` and nothing else, so a file cannot run code; a
file that holds any other global is refused with the global's name.
"""

from __future__ import annotations

import argparse
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .registry import DetectorWeightsError


def read_checkpoint(path: str | Path, kind: str) -> tuple[dict[str, torch.Tensor], Any]:
    """``(state_dict, args)`` of a ``{'model': ..., 'args': ...}`` container or a bare state dict (args None).

    ``kind`` ("QPIC", "FGAHOI") only words the errors. The caller checks that the file exists.
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            container = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        culprit = f"an object of type {found.group(1)}" if found else "an object of a type that is not allowed"
        raise DetectorWeightsError(
            f"refusing to load {path}: it contains {culprit}; a {kind} checkpoint may hold only tensors, "
            "plain containers and argparse.Namespace (read with weights_only=True, nothing else is unpickled)"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise DetectorWeightsError(f"cannot read {path} as a PyTorch checkpoint: {err}") from err
    if isinstance(container, Mapping) and "model" in container:
        state, args = container["model"], container.get("args")
    else:
        state, args = container, None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DetectorWeightsError(
            f"{path} is not a {kind} checkpoint: expected {{'model': state_dict, 'args': Namespace}} or a state dict"
        )
    if not isinstance(args, (argparse.Namespace, Mapping)):
        args = None
    return dict(state), args


def load_strictly(model: torch.nn.Module, state: Mapping[str, torch.Tensor], path: str | Path, kind: str,
                  config: Any) -> torch.nn.Module:
    """Every key of ``state`` into ``model`` and every parameter of ``model`` from ``state``, shapes equal;
    otherwise an error naming the file. Returns the model in eval mode, frozen."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise DetectorWeightsError(f"{path} does not match the {kind} architecture {config}: {err}") from None
    if missing or unexpected:
        raise DetectorWeightsError(
            f"{path} does not match the {kind} architecture {config}: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    return model.eval().requires_grad_(False)


def args_dict(args: argparse.Namespace | Mapping[str, Any] | None) -> dict[str, Any]:
    if args is None:
        return {}
    return dict(args) if isinstance(args, Mapping) else vars(args)
