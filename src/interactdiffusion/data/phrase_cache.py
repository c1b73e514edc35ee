"""The phrase table: every distinct phrase embedded once per text encoder, kept on disk.

HICO-DET has about 200 phrases ("person", 80 objects, 117 "-ing" verbs). They are encoded once with the
backbone's text encoder (``PhraseEncoder``: pooled CLIP output) and stored as safetensors under a name
keyed by ``module_fingerprint(text_encoder)``, so another encoder never reuses them and a restart
encodes nothing. Batches carry ids into this table, never text.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from ..atomic import write_file_atomic

log = logging.getLogger(__name__)


class PhraseCacheError(ValueError):
    """A file given as a phrase cache that holds no phrase → vector table."""


def phrase_cache_file(cache_dir: str | Path, fingerprint: str) -> Path:
    return Path(cache_dir) / f"phrases-{fingerprint}.safetensors"


def _vectors(table: dict, file: Path) -> dict[str, torch.Tensor]:
    out = {}
    for phrase, vector in table.items():
        if not isinstance(phrase, str) or not isinstance(vector, torch.Tensor) or vector.numel() == 0:
            raise PhraseCacheError(f"{file}: entry {phrase!r} is not a phrase with a vector")
        out[phrase] = vector.detach().float().reshape(-1)  # the official file stores [1, 768] rows
    return out


def read_phrase_table(file: str | Path, fingerprint: str | None = None) -> dict[str, torch.Tensor]:
    """The phrase → vector table of one file, whoever wrote it.

    Accepted: our safetensors (``embeddings`` [P, D] + ``phrases`` metadata, written by training and by
    ``interactdiffusion-generate phrase_cache=``), a safetensors with one tensor per phrase, and a torch
    dict phrase → vector such as the official ``DATA/clip_phrases_feature_cache.pth`` (read with
    ``weights_only``). A table recorded for another text encoder than ``fingerprint`` is ignored with a
    warning: its vectors would silently mean something else.
    """
    file = Path(file)
    if file.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(file), framework="pt") as fh:
                metadata = fh.metadata() or {}
                if "phrases" in metadata:
                    phrases = json.loads(metadata["phrases"])
                    table = dict(zip(phrases, fh.get_tensor("embeddings")))
                    if len(table) != len(phrases) or fh.get_slice("embeddings").get_shape()[0] != len(phrases):
                        raise PhraseCacheError(f"{file}: {len(phrases)} phrases but another number of embeddings")
                else:
                    table = {k: fh.get_tensor(k) for k in fh.keys()}
        except PhraseCacheError:
            raise
        except Exception as err:
            raise PhraseCacheError(f"{file}: not a readable safetensors phrase cache ({err})") from None
        recorded = metadata.get("text_encoder")
    else:
        try:
            raw = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as err:
            raise PhraseCacheError(f"{file}: not a readable torch phrase cache ({err})") from None
        if isinstance(raw, dict) and "phrases" in raw and "embeddings" in raw:
            raw = dict(zip(raw["phrases"], raw["embeddings"]))
        if not isinstance(raw, dict):
            raise PhraseCacheError(f"{file}: not a phrase -> vector table")
        table, recorded = raw, None
    if fingerprint and recorded and recorded != fingerprint:
        log.warning("phrase cache %s was made with another text encoder; ignoring it", file)
        return {}
    return _vectors(table, file)


def write_phrase_table(file: str | Path, table: dict[str, torch.Tensor], fingerprint: str) -> None:
    """Write ``table`` atomically in the one format every reader here accepts."""
    from safetensors.torch import save_file

    file = Path(file)
    phrases = list(table)
    embeddings = torch.stack([table[p].float().reshape(-1) for p in phrases]) if phrases else torch.zeros(0, 0)
    metadata = {"phrases": json.dumps(phrases), "text_encoder": fingerprint}
    write_file_atomic(file, lambda tmp: save_file({"embeddings": embeddings.contiguous()}, str(tmp), metadata=metadata))


def _read_or_forget(file: Path, fingerprint: str) -> dict[str, torch.Tensor]:
    try:
        return read_phrase_table(file, fingerprint)
    except PhraseCacheError as err:  # a truncated or foreign file in our own cache is recomputed, not fatal
        log.warning("ignoring unreadable phrase cache (%s)", err)
        return {}


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
    table = _read_or_forget(file, fingerprint) if file.is_file() else {}
    missing = list(dict.fromkeys(p for p in phrases if p not in table))
    if missing:
        log.info("encoding %d phrases (cache %s)", len(missing), file)
        for phrase, vector in zip(missing, phrase_encoder(missing)):
            table[phrase] = vector.detach().float().cpu()
        write_phrase_table(file, table, fingerprint)
    if hasattr(phrase_encoder, "preload"):
        phrase_encoder.preload(table)
    if not phrases:
        dim = next(iter(table.values())).shape[-1] if table else 0
        return torch.zeros(0, dim)
    return torch.stack([table[p] for p in phrases]).float()
