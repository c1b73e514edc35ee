"""Resumable commands compare the settings a folder was made with against the settings asked for now."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def settings_difference(old: Mapping[str, Any], new: Mapping[str, Any], limit: int = 4) -> str | None:
    """``None`` when equal, else the first differing keys as "key: old there, new now; ..."."""
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if not changed:
        return None
    return "; ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in changed[:limit])
