"""Checkpoint formats of the interaction module: the official releases, GLIGEN, and our own export.

Every reader returns the same thing: the adapter (fusers + ``position_net``) in diffusers key names,
exactly the keys of :func:`~interactdiffusion.models.unet.adapter_state_dict`. The official LDM
files name blocks ``input_blocks.1.1`` where diffusers says ``down_blocks.0.attentions.0``; below the
block prefix the names are identical, so converting the adapter is a prefix rename derived from the
UNet config (the same block arithmetic diffusers' own LDM converter uses). The Stable Diffusion part
of a full checkpoint goes through diffusers' converter unchanged.

Pickled files are read with ``torch.load(weights_only=True)``: nothing in a file can run code.

The package splits this by concern: ``safe_load`` (pickles, ``CheckpointError``), ``key_mapping``
(LDM <-> diffusers names), ``official`` (the official releases), ``gligen`` (GLIGEN as initialisation),
``export`` (our format), ``reading`` and ``loading`` (one entry point for every format). Everything
public is re-exported here, so ``from interactdiffusion.models import checkpoints`` sees it all.
"""

from __future__ import annotations

import logging

from .export import (
    ADAPTER_FORMAT,
    ADAPTER_FORMAT_VERSION,
    export_config,
    load_adapter,
    save_adapter,
)
from .gligen import NEW_EMBEDDING_STD, NEW_EMBEDDINGS, InitReport, init_from_gligen, is_gligen_adapter
from .key_mapping import (
    convert_ldm_unet,
    diffusers_adapter_to_ldm,
    ldm_adapter_to_diffusers,
    ldm_block_prefixes,
)
from .loading import load_adapter_into, load_adapter_weights
from .official import (
    OfficialCheckpoint,
    diffusers_unet_weights,
    is_full_checkpoint,
    load_diffusers_adapter,
    load_official_adapter,
    load_official_full_checkpoint,
    official_full_from_raw,
)
from .reading import adapter_from_raw, read_adapter_weights
from .safe_load import ACCEPTED_FORMATS, CheckpointError, DroppedObject, StateDict, read_checkpoint

log = logging.getLogger(__name__)  # the parent of every submodule's logger

__all__ = [
    "ACCEPTED_FORMATS", "ADAPTER_FORMAT", "ADAPTER_FORMAT_VERSION", "CheckpointError", "DroppedObject",
    "InitReport", "NEW_EMBEDDINGS", "NEW_EMBEDDING_STD", "OfficialCheckpoint", "StateDict", "adapter_from_raw",
    "convert_ldm_unet", "diffusers_adapter_to_ldm", "diffusers_unet_weights", "export_config", "init_from_gligen",
    "is_full_checkpoint", "is_gligen_adapter", "ldm_adapter_to_diffusers", "ldm_block_prefixes", "load_adapter",
    "load_adapter_into", "load_adapter_weights", "load_diffusers_adapter", "load_official_adapter",
    "load_official_full_checkpoint", "official_full_from_raw", "read_adapter_weights", "read_checkpoint",
    "save_adapter",
]
