"""``interactdiffusion-app``: the layout editor in the browser, on the generate CLI's config.

    interactdiffusion-app                                      # HOI-Shapes backbone + committed adapter
    interactdiffusion-app backbone=sd15 model=interactdiffusion weights=/weights/interact-diffusion-v1.pth

Every ``interactdiffusion-generate`` setting applies (configs/app.yaml composes generate.yaml); ``app.*``
sets host, port, vocabulary, canvas size and the output folder. Open the printed URL.
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ..app.launch import build_app, launch, stay_offline
from ..config_path import config_dir


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="app")
def _hydra_main(cfg: DictConfig) -> None:
    from .generate import EXIT_BAD_INPUT, InputError

    runtime = HydraConfig.get()
    choices = {k: v for k, v in runtime.runtime.choices.items() if k in ("backbone", "model")}
    try:
        page, _ = build_app(cfg, choices, list(runtime.overrides.task))
    except InputError as error:
        print(f"interactdiffusion-app: error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    launch(page, cfg)


def main() -> None:
    """Console entry point (``interactdiffusion-app key=value ...``)."""
    stay_offline()
    _hydra_main()


if __name__ == "__main__":
    main()
