"""Sharded safetensors (``<name>.safetensors.index.json`` + shards), as ``save_pretrained`` writes big UNets.

An SDXL UNet with 70 fusers is about 10 GB in fp32, so diffusers and the official XL trainer split it.
Reading goes through the index's ``weight_map`` and can keep only some keys (the adapter), so that
loading an adapter does not hold the whole UNet in memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open

INDEX_SUFFIX = ".safetensors.index.json"


def is_shard_index(path: str | Path) -> bool:
    return str(path).endswith(INDEX_SUFFIX)


def read_sharded_safetensors(index: str | Path, keep: Callable[[str], bool] | None = None) -> dict[str, torch.Tensor]:
    """All tensors (or those whose key passes ``keep``) of a sharded safetensors checkpoint."""
    index = Path(index)
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{index}: not a safetensors shard index with a 'weight_map' ({error})") from None
    by_shard: dict[str, list[str]] = {}
    for key, shard in weight_map.items():
        if keep is None or keep(key):
            by_shard.setdefault(shard, []).append(key)
    state: dict[str, torch.Tensor] = {}
    for shard, keys in sorted(by_shard.items()):
        file = index.parent / shard
        if not file.is_file():
            raise FileNotFoundError(f"{index}: shard {shard} (holding {keys[0]} and {len(keys) - 1} more) is missing")
        with safe_open(str(file), framework="pt") as handle:
            for key in keys:
                state[key] = handle.get_tensor(key)
    return state
