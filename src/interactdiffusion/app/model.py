"""The model behind the page, loaded and run by the generate CLI's own code (``generation/``).

Settings are read by ``generation.read_settings`` from the Hydra config with the page's values merged
in, the pipeline is built by ``generation.build_pipeline``, phrases are embedded by
``generation.prepare_phrases`` and images are made by ``generation.sample``: the page and
``interactdiffusion-generate`` load the same model and make the same image from the same scene and
settings (the "CLI command" the page shows reproduces it).
"""

from __future__ import annotations

import logging
import re
import shlex
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from ..generation import InputError, build_pipeline, prepare_phrases, read_settings, sample, scene_size
from ..scene import Scene
from ..vocab import COCO_CATEGORIES, phrase_of
from .layout import PhraseChoices

log = logging.getLogger("interactdiffusion.app")

# The settings the page edits, as generate.yaml names them.
PAGE_KEYS = ("negative_prompt", "seed", "steps", "guidance_scale", "beta")
# Written into the CLI command from the loaded config (the app's defaults differ from generate.yaml's).
COMMAND_KEYS = ("weights", "scheduler", "precision", "eta", "resolution", "use_scene_size")
HICO_ANNOTATIONS = "hico_20160224_det/anno_bbox.mat"


@dataclass(frozen=True)
class PageSettings:
    """What the page asks for besides the layout."""

    negative_prompt: str
    seed: int
    steps: int
    guidance_scale: float
    beta: float
    num_images: int = 1


_BARE = re.compile(r"^[A-Za-z0-9_/.\-:+@%]+$")
_SHELL_SAFE_IN_DOUBLE_QUOTES = re.compile(r'^[^"$`\\!]*$')


def hydra_value(value: Any) -> str:
    """A value as a Hydra override writes it: strings quoted unless plain (a path, a word) so commas and
    spaces stay one string and "null" or "1" stay strings."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    try:
        plain = _BARE.match(text) and not isinstance(yaml.safe_load(text), (bool, int, float, type(None)))
    except yaml.YAMLError:
        plain = False
    if plain:
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def shell_argument(arg: str) -> str:
    """``key='a, b'`` stays readable in double quotes; anything a shell would expand is single-quoted."""
    if re.match(r"^[\w/.\-:+@%=]+$", arg):
        return arg
    return f'"{arg}"' if _SHELL_SAFE_IN_DOUBLE_QUOTES.match(arg) else shlex.quote(arg)


def phrase_choices(cfg: DictConfig) -> tuple[PhraseChoices, str]:
    """The pickers' phrases and where they come from (``app.vocabulary``, see configs/app.yaml)."""
    source = str(cfg.app.get("vocabulary") or "auto")
    if source == "auto":
        if str(cfg.backbone.get("name", "")).startswith("shapes"):
            from ..shapes.world import ShapesWorld

            return PhraseChoices.from_vocabulary(ShapesWorld().vocabulary()), "the HOI-Shapes world"
        candidate = Path(str(cfg.paths.data_dir)) / HICO_ANNOTATIONS
        if not candidate.is_file():
            objects = sorted(phrase_of(name) for _, name in COCO_CATEGORIES)
            return PhraseChoices(["person"], [], objects), (
                f"COCO object names only: {candidate} not found, so actions are free text "
                "(set app.vocabulary=<HICO-DET anno_bbox.mat> to pick them)"
            )
        source = str(candidate)
    from ..data.annotations import load_vocabulary

    try:
        return PhraseChoices.from_vocabulary(load_vocabulary(source)), source
    except (OSError, ValueError) as error:
        raise InputError(f"setting 'app.vocabulary': {error}") from None


class AppModel:
    """One loaded pipeline and the config it came from; ``generate`` runs one call at a time."""

    def __init__(self, cfg: DictConfig, choices: dict[str, str] | None = None, overrides: list[str] | None = None):
        self.cfg = cfg
        self.choices = dict(choices or {})  # config groups picked at launch (backbone=..., model=...)
        self.overrides = list(overrides or [])  # the launch's other overrides, repeated in the CLI command
        self.pipe = None
        self.loaded = "nothing loaded yet"
        self._lock = threading.Lock()

    # -- loading -----------------------------------------------------------------------------------
    def load(self, weights: str | None = None) -> str:
        """Build the pipeline (optionally with other weights); on failure the old one stays loaded."""
        cfg = self.cfg
        if weights is not None:
            cfg = OmegaConf.merge(cfg, {"weights": weights.strip() or None})
        settings = read_settings(cfg)
        pipe = build_pipeline(cfg, settings)
        with self._lock:
            self.cfg, self.pipe = cfg, pipe
            self.loaded = f"{settings.backbone} with {settings.weights or 'no interaction weights'}"
        return self.loaded

    @property
    def max_interactions(self) -> int:
        from ..scene import MAX_INTERACTIONS

        return int(getattr(self.pipe.unet.position_net, "max_interactions", MAX_INTERACTIONS))

    # -- settings ----------------------------------------------------------------------------------
    def merged(self, page: PageSettings) -> DictConfig:
        values = {key: getattr(page, key) for key in PAGE_KEYS}
        return OmegaConf.merge(self.cfg, values)

    def check(self, scene: Scene, page: PageSettings, max_images: int) -> None:
        """Everything Generate needs, checked before any step runs; ``InputError`` says what is wrong."""
        if self.pipe is None:
            raise InputError(f"no model is loaded ({self.loaded})")
        limit = self.max_interactions
        if len(scene.interactions) > limit:
            raise InputError(
                f"{len(scene.interactions)} interactions, but the loaded model takes at most {limit} "
                "(max_interactions of its interaction module): remove some"
            )
        if not 1 <= page.num_images <= max_images:
            raise InputError(f"number of images must be in [1, {max_images}], got {page.num_images}")

    def generate(self, scene: Scene, page: PageSettings, max_images: int = 8):
        """``page.num_images`` images of ``scene``; the first is what the generate CLI makes of it."""
        self.check(scene, page, max_images)
        cfg = self.merged(page)
        settings = read_settings(cfg)
        with self._lock:
            prepare_phrases(self.pipe, cfg, [scene])
            return sample(self.pipe, [scene], settings, scene_size(scene, settings), page.num_images).images

    # -- the command line --------------------------------------------------------------------------
    def cli_command(self, scene_file: Path, output_dir: Path, page: PageSettings) -> str:
        """``interactdiffusion-generate ...`` that makes the page's first image from ``scene_file``."""
        cfg = self.merged(page)
        args = [f"{group}={name}" for group, name in self.choices.items() if group in ("backbone", "model")]
        backbone_path = cfg.backbone.get("path")
        if backbone_path:  # absolute: the default one is relative to the folder the app started in
            args.append(f"backbone.path={hydra_value(str(Path(str(backbone_path)).expanduser().resolve()))}")
        set_here = {"backbone", "model", "backbone.path", *COMMAND_KEYS, *PAGE_KEYS, "input", "output_dir"}
        args += [o for o in self.overrides
                 if o.split("=", 1)[0].lstrip("+~") not in set_here and not o.startswith(("app.", "hydra."))]
        weights = cfg.get("weights")
        for key in COMMAND_KEYS + PAGE_KEYS:
            value = cfg.get(key)
            if key == "weights" and weights:
                value = str(Path(str(weights)).expanduser().resolve())
            args.append(f"{key}={hydra_value(value)}")
        args += [f"input={hydra_value(str(scene_file))}", f"output_dir={hydra_value(str(output_dir))}"]
        return " ".join(["interactdiffusion-generate", *(shell_argument(a) for a in args)])
