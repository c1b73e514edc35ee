"""Where the Hydra configs live: the repository's top-level ``configs/`` folder.

The package is installed editable from the repository (``make install``), so the folder sits two levels
above this file. ``INTERACTDIFFUSION_CONFIG_DIR`` overrides it (a copy of the configs elsewhere).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def config_dir() -> str:
    """Absolute path of the configs folder, as Hydra's ``config_path`` wants it."""
    override = os.environ.get("INTERACTDIFFUSION_CONFIG_DIR")
    candidates = [Path(override)] if override else []
    candidates += [REPO_ROOT / "configs", Path.cwd() / "configs"]
    for candidate in candidates:
        if (candidate / "backbone").is_dir():
            return str(candidate.resolve())
    raise FileNotFoundError(
        "cannot find the configs folder (looked in: " + ", ".join(str(c) for c in candidates) + "); "
        "install the package editable from the repository (`make install`) or set INTERACTDIFFUSION_CONFIG_DIR"
    )
