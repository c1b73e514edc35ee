"""Resumable commands compare the settings a folder was made with against the settings asked for now."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from .atomic import write_json_atomic

log = logging.getLogger(__name__)


def settings_difference(old: Mapping[str, Any], new: Mapping[str, Any], limit: int = 4) -> str | None:
    """``None`` when equal, else the first differing keys as "key: old there, new now; ..."."""
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if not changed:
        return None
    return "; ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in changed[:limit])


def cache_root() -> Path:
    """The package's on-disk cache (``INTERACTDIFFUSION_CACHE_DIR``, default ``~/.cache/interactdiffusion``)."""
    return Path(os.environ.get("INTERACTDIFFUSION_CACHE_DIR", Path.home() / ".cache" / "interactdiffusion"))


FINGERPRINT_CACHE_NAME = "fingerprints.json"
FINGERPRINT_CACHE_SIZE = 256  # entries kept, least recently used dropped


def content_fingerprint(path: str | Path | None) -> str | None:
    """``sha256:<hex>`` of a file's bytes, or of a folder's files (relative names and bytes); None when
    ``path`` is unset or absent. Recorded beside the path, so that a resumed command notices weights
    replaced under the same name (a re-published adapter, a re-trained backbone) instead of reusing
    images the old ones made.

    Hashing a multi-GB backbone takes minutes, so the digest is kept in ``<cache_root>/fingerprints.json``
    keyed by every file's (path, size, mtime, ctime, inode, device): a second start only lists the files.
    What the key detects: a rewrite in place (mtime and ctime change), a replacement by rename (a new
    inode), an added, removed or renamed file, and content changed with its mtime restored by
    ``os.utime`` (that sets ctime, which no user call can set back). What it cannot: an edit that
    bypasses the file system (a raw block device, a network store that keeps neither time), or one
    made while the clock was set back to the old ctime; delete the cache file to force a re-hash.
    """
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
    listing = []
    for f in files:
        st = f.stat()
        listing.append((str(f.relative_to(base)), str(f), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino,
                        st.st_dev))
    return _cached_digest(tuple(listing))


@lru_cache(maxsize=64)
def _cached_digest(listing: tuple[tuple[str, str, int, int, int, int, int], ...]) -> str:
    """The digest of ``listing`` from the persistent cache, else hashed now and stored."""
    key = hashlib.sha256(json.dumps(listing).encode("utf-8")).hexdigest()
    cache_file = cache_root() / FINGERPRINT_CACHE_NAME
    entries = _read_cache(cache_file)
    hit = entries.get(key)
    if isinstance(hit, dict) and str(hit.get("digest", "")).startswith("sha256:"):
        digest = hit["digest"]
    else:
        digest = _hash_files([(name, file) for name, file, *_ in listing])
    entries = _read_cache(cache_file)  # others may have written meanwhile: keep theirs
    entries[key] = {"digest": digest, "path": listing[0][1] if listing else "", "used": time.time()}
    newest = sorted(entries.items(), key=lambda kv: kv[1].get("used", 0), reverse=True)[:FINGERPRINT_CACHE_SIZE]
    try:
        write_json_atomic(cache_file, dict(newest), indent=None)
    except OSError as error:  # a read-only home: fingerprints still work, they are only not kept
        log.debug("fingerprint cache %s not written (%s)", cache_file, error)
    return digest


def _read_cache(cache_file: Path) -> dict[str, dict[str, Any]]:
    try:
        entries = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return entries if isinstance(entries, dict) else {}


def _hash_files(files: list[tuple[str, str]]) -> str:
    """sha256 over every file's relative name and bytes, in listing order."""
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(name.encode("utf-8") + b"\0")
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"
