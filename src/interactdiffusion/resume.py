"""Resumable commands compare the settings a folder was made with against the settings asked for now."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any


def settings_difference(old: Mapping[str, Any], new: Mapping[str, Any], limit: int = 4) -> str | None:
    """``None`` when equal, else the first differing keys as "key: old there, new now; ..."."""
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if not changed:
        return None
    return "; ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in changed[:limit])


def content_fingerprint(path: str | Path | None) -> str | None:
    """``sha256:<hex>`` of a file's bytes, or of a folder's files (relative names and bytes); None when
    ``path`` is unset or absent. Recorded beside the path, so that a resumed command notices weights
    replaced under the same name (a re-published adapter, a re-trained backbone) instead of reusing
    images the old ones made."""
    if path in (None, ""):
        return None
    root = Path(str(path)).expanduser().resolve()
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(f for f in root.rglob("*") if f.is_file())
    else:
        return None
    base = root.parent if root.is_file() else root
    listing = tuple((str(f.relative_to(base)), str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _hash_files(listing)


@lru_cache(maxsize=64)
def _hash_files(listing: tuple[tuple[str, str, int, int], ...]) -> str:
    """Keyed on (name, path, size, mtime) so one process hashes an unchanged file once."""
    digest = hashlib.sha256()
    for name, path, _size, _mtime in listing:
        digest.update(name.encode("utf-8") + b"\0")
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"
