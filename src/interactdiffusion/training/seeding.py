"""Randomness that depends only on *what* is being computed, never on when or where.

Every random draw of a training step (timestep, noise, latent sample, caption and grounding drop)
comes from a generator seeded by (run seed, epoch, batch index, sample id). So a resumed run draws
exactly what the uninterrupted run would have drawn, and a sample gets the same noise whether it is
trained on one GPU or split over several: results do not depend on prefetching, workers or the number
of processes.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def mix_seed(*parts: Any) -> int:
    """A 63-bit seed from any printable parts (stable across processes and Python versions)."""
    text = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & ((1 << 63) - 1)


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def sample_generators(
    base_seed: int, step_key: Sequence[Any], sample_keys: Sequence[Any], device: torch.device | str = "cpu"
) -> list[torch.Generator]:
    """One generator per sample, keyed by the step and the sample's identity (e.g. its scene id)."""
    return [generator(mix_seed(base_seed, *step_key, "sample", key), device) for key in sample_keys]


def capture_rng_state() -> dict[str, Any]:
    """The global generators of this process: python, numpy, torch CPU and (if used) CUDA."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": _numpy_state_plain(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    if "python" in state:
        random.setstate(_as_python_state(state["python"]))
    if "numpy" in state:
        np.random.set_state(_numpy_state_from_plain(state["numpy"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu() if hasattr(state["torch"], "cpu") else state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def _numpy_state_plain(state) -> dict[str, Any]:
    """numpy's legacy state as tensors and numbers, so checkpoints load with ``weights_only=True``."""
    kind, keys, pos, has_gauss, cached = state
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _numpy_state_from_plain(state):
    if not isinstance(state, dict):
        return state
    keys = state["keys"].numpy().astype(np.uint32)
    return (state["kind"], keys, state["pos"], state["has_gauss"], state["cached_gaussian"])


def _as_python_state(value):
    """``random.setstate`` wants tuples; a checkpoint round trip may give lists."""
    if isinstance(value, list):
        return tuple(_as_python_state(v) for v in value)
    return value


class seeded_globals:  # noqa: N801 - used like a function: ``with seeded_globals(seed): ...``
    """Seed python, numpy and torch (CPU) for the block, and restore their states afterwards.

    Lets code we do not own (a dataset's augmentation calling ``torch.rand``) draw from a stream
    determined by ``seed`` alone, without disturbing anybody else's stream.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        self._python = random.getstate()
        self._numpy = np.random.get_state()
        self._torch = torch.get_rng_state()
        random.seed(self.seed)
        np.random.seed(self.seed % (1 << 32))
        torch.default_generator.manual_seed(self.seed)  # CPU only: leave CUDA streams alone
        return self

    def __exit__(self, *exc):
        random.setstate(self._python)
        np.random.set_state(self._numpy)
        torch.set_rng_state(self._torch)
        return False
