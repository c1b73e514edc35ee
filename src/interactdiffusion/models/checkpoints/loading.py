"""Loading adapter weights of any accepted format into a grounded UNet (GLIGEN weights become an initialisation)."""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from ..grounding import GLIGENGrounding
from ..unet import load_adapter_state_dict
from .gligen import init_from_gligen, is_gligen_adapter
from .reading import read_adapter_weights
from .safe_load import CheckpointError, StateDict

log = logging.getLogger(__name__)



def load_adapter_weights(path: str | Path, target_unet: nn.Module | None = None, from_gligen: bool | None = None,
                         seed: int = 0, read: tuple[str, StateDict] | None = None) -> StateDict:
    """Diffusers-named adapter weights from any accepted file (see ``ACCEPTED_FORMATS``).

    GLIGEN weights (``from_gligen=True``, or detected by the absence of ``linear_action``) become an
    InteractDiffusion initialisation via :func:`init_from_gligen`, except for a ``gligen`` variant
    target, whose ``position_net`` has GLIGEN's own keys and loads them directly. ``read`` is what
    :func:`read_adapter_weights` (or :func:`adapter_from_raw`) already returned for ``path``.
    """
    kind, state = read if read is not None else read_adapter_weights(path, target_unet)
    log.info("read %s as %s (%d adapter keys)", path, kind, len(state))
    if from_gligen is None:
        gligen_target = target_unet is not None and isinstance(target_unet.position_net, GLIGENGrounding)
        from_gligen = is_gligen_adapter(state) and not gligen_target
    if from_gligen:
        state = init_from_gligen(state, target_unet, seed=seed, source=str(path))[0]
    return state


def load_adapter_into(unet: nn.Module, path: str | Path, strict: bool = True, from_gligen: bool | None = None,
                      seed: int = 0, read: tuple[str, StateDict] | None = None) -> list[str]:
    """Load adapter weights from any accepted file into a grounded UNet; returns missing keys.

    Weights for another backbone or tokenizer shape raise a ``ValueError`` naming the file and the
    first mismatching keys.
    """
    state = load_adapter_weights(path, unet, from_gligen=from_gligen, seed=seed, read=read)
    try:
        return load_adapter_state_dict(unet, state, strict=strict)
    except (KeyError, ValueError) as error:
        message = error.args[0] if error.args else str(error)
        raise CheckpointError(f"{path}: {message}") from error
