"""The phrase table: every distinct phrase embedded once per text encoder, kept on disk.

HICO-DET has about 200 phrases ("person", 80 objects, 117 "-ing" verbs). They are encoded once with the
backbone's text encoder (``PhraseEncoder``: pooled CLIP output) and stored as safetensors under a name
keyed by ``module_fingerprint(text_encoder)``, so another encoder never reuses them and a restart
encodes nothing. Batches carry ids into this table, never text.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def phrase_cache_file(cache_dir: str | Path, fingerprint: str) -> Path:
    return Path(cache_dir) / f"phrases-{fingerprint}.safetensors"


def _read(file: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as fh:
            phrases = json.loads(fh.metadata()["phrases"])
            table = fh.get_tensor("embeddings")
    except Exception as err:  # a truncated or foreign file is recomputed, not fatal
        log.warning("ignoring unreadable phrase cache %s (%s)", file, err)
        return {}
    if table.shape[0] != len(phrases):
        return {}
    return dict(zip(phrases, table))


def _write(file: Path, table: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    phrases = list(table)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    save_file({"embeddings": torch.stack([table[p] for p in phrases]).contiguous()}, str(tmp),
              metadata={"phrases": json.dumps(phrases)})
    tmp.replace(file)


def load_or_compute_phrase_table(
    phrases: Sequence[str],
    phrase_encoder,
    cache_dir: str | Path,
    fingerprint: str | None = None,
) -> torch.Tensor:
    """Embeddings [len(phrases), D] (float32, CPU) in the order of ``phrases``.

    ``phrase_encoder`` is a ``models.backbone.PhraseEncoder`` (anything callable on a list of phrases with
    a ``text_encoder`` attribute). Phrases already on disk are read; only new ones are encoded, and the
    file is then rewritten with them added. The encoder's memo is seeded with the table so later calls
    on it do not encode either.
    """
    if fingerprint is None:
        from ..models.backbone import module_fingerprint

        fingerprint = module_fingerprint(phrase_encoder.text_encoder)
    file = phrase_cache_file(cache_dir, fingerprint)
    table = _read(file) if file.is_file() else {}
    missing = list(dict.fromkeys(p for p in phrases if p not in table))
    if missing:
        log.info("encoding %d phrases (cache %s)", len(missing), file)
        for phrase, vector in zip(missing, phrase_encoder(missing)):
            table[phrase] = vector.detach().float().cpu()
        _write(file, table)
    if hasattr(phrase_encoder, "preload"):
        phrase_encoder.preload(table)
    if not phrases:
        dim = next(iter(table.values())).shape[-1] if table else 0
        return torch.zeros(0, dim)
    return torch.stack([table[p] for p in phrases]).float()
