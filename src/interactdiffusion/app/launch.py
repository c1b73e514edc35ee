"""Start the page for a composed config: the model first (a load error is shown in the page), then Gradio.

Nothing leaves the machine: Gradio's analytics and version check are off, the page uses local fonts
and listens on ``app.host`` (localhost by default).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig

OFFLINE_ENV = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRANSFORMERS_OFFLINE": "1",
}

log = logging.getLogger("interactdiffusion.app")


def stay_offline() -> None:
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def build_app(cfg: DictConfig, choices: dict[str, str] | None = None, overrides: list[str] | None = None):
    """(Gradio Blocks, AppModel) for ``cfg`` (configs/app.yaml); a model that fails to load leaves the page
    up with the reason in its status line."""
    stay_offline()
    from ..generation import InputError
    from .model import AppModel, phrase_choices
    from .ui import build_ui

    model = AppModel(cfg, choices, overrides)
    load_error = None
    try:
        log.info("loaded %s", model.load())
    except InputError as error:
        load_error = model.loaded = f"the model did not load: {error}"
        log.error("%s", load_error)
    choices_, source = phrase_choices(cfg)
    page = build_ui(
        model, choices_, source,
        max_rows=int(cfg.app.max_rows),
        canvas_size=int(cfg.app.canvas_size),
        max_images=int(cfg.app.max_images),
        output_dir=Path(str(cfg.app.output_dir)).expanduser().resolve(),
        load_error=load_error,
    )
    return page, model


def launch(page, cfg: DictConfig, *, block: bool = True):
    """Serve ``page`` on ``app.host``/``app.port``; returns the local URL (at once when not ``block``)."""
    port = cfg.app.get("port")
    page.queue(default_concurrency_limit=1)
    page.launch(
        server_name=str(cfg.app.host),
        server_port=int(port) if port is not None else None,
        inbrowser=bool(cfg.app.get("open_browser", False)),
        share=False,
        ssr_mode=False,
        show_error=False,
        quiet=not block,
        prevent_thread_lock=not block,
        allowed_paths=[str(Path(str(cfg.app.output_dir)).expanduser().resolve())],
    )
    return page.local_url
