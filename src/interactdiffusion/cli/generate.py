"""``interactdiffusion-generate``: a file of scenes → one image per scene, resumable.

    interactdiffusion-generate backbone=sd14 weights=interact-diffusion-v1.pth input=scenes.json output_dir=out

Per scene: ``<id>.png``, ``<id>_boxes.png`` (the layout drawn on it) and a line of ``metadata.jsonl``
(scene, seed, settings). The whole input is validated before anything is generated; bad input or
settings print one message naming the scene and field and exit with code 2. Files are written under a
temporary name and renamed, so a crash never leaves half an image; running the same command again skips
the scenes already written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from ..atomic import IncompleteFolderError, write_text_atomic
from ..config_path import config_dir
from ..resume import content_fingerprint, settings_difference
from ..scene import MAX_INTERACTIONS, Scene, SceneError, read_scenes

log = logging.getLogger("interactdiffusion.generate")

EXIT_BAD_INPUT = 2
METADATA_NAME = "metadata.jsonl"
BOX_FORMATS = ("normalized", "pixels")
PRECISION_CHOICES = ("auto", "fp32", "fp16", "bf16")


class InputError(Exception):
    """Bad input or settings: reported in one message, exit code 2, nothing generated."""


@dataclass
class Settings:
    """Everything that decides what an image looks like (recorded with each image) + how to run."""

    steps: int
    guidance_scale: float
    beta: float
    seed: int
    scheduler: str
    scheduler_kwargs: dict[str, Any]
    eta: float
    precision: str
    negative_prompt: str
    resolution: int
    use_scene_size: bool
    backbone: str
    weights: str | None
    grounding: dict[str, Any] = field(default_factory=dict)
    # The bytes behind those paths: re-published weights under the same name are other settings.
    backbone_sha256: str | None = None
    weights_sha256: str | None = None
    # How to run: not part of the record, an image does not depend on them.
    batch_size: int = 8
    device: str = "cpu"

    RUN_ONLY = ("batch_size", "device")

    def record(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in self.RUN_ONLY}


# -- validation ------------------------------------------------------------------------------------
def _get(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=True)
    except MissingMandatoryValue:
        raise InputError(f"setting {key!r} is required, e.g. {key}=...") from None


def _number(cfg: DictConfig, key: str, kind: type, low: float | None = None, high: float | None = None):
    value = _get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not float(value).is_integer()):
        raise InputError(f"setting {key!r} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    value = kind(value)
    if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise InputError(f"setting {key!r} must be in {bounds}, got {value!r}")
    return value


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"setting 'device' is {device!r} but no CUDA device is available")
    return device


def read_settings(cfg: DictConfig) -> Settings:
    """The numeric and named settings, each checked; an error names the setting."""
    from ..pipeline import SCHEDULER_PRESETS, is_pipeline_folder, make_scheduler

    precision = str(_get(cfg, "precision")).lower()
    if precision not in PRECISION_CHOICES:
        raise InputError(f"setting 'precision' must be one of {', '.join(PRECISION_CHOICES)}, got {precision!r}")
    device = resolve_device(str(_get(cfg, "device")))
    if precision == "auto":
        precision = "fp16" if device.startswith("cuda") else "fp32"
    scheduler = str(_get(cfg, "scheduler"))
    scheduler_kwargs = OmegaConf.to_container(cfg.scheduler_kwargs, resolve=True) if cfg.scheduler_kwargs else {}
    if scheduler.lower() not in SCHEDULER_PRESETS:
        try:
            make_scheduler(scheduler, {})
        except ValueError as error:
            raise InputError(f"setting 'scheduler': {error}") from None
    resolution = _number(cfg, "resolution", int, 8)
    if resolution % 8:
        raise InputError(f"setting 'resolution' must be a multiple of 8, got {resolution}")
    grounding = cfg.get("model", {}).get("grounding") or {}
    weights = cfg.get("weights")
    try:
        whole_pipeline = bool(weights) and is_pipeline_folder(Path(weights).expanduser())
    except IncompleteFolderError as error:
        raise InputError(f"setting 'weights': {error}") from None
    if whole_pipeline:
        backbone, backbone_path = "(the pipeline folder in weights)", None  # it brings its own SD weights
    else:
        backbone = str(cfg.backbone.get("path") or cfg.backbone.get("name") or cfg.backbone.get("kind"))
        backbone_path = cfg.backbone.get("path")
    return Settings(
        steps=_number(cfg, "steps", int, 1),
        guidance_scale=_number(cfg, "guidance_scale", float, 0.0),
        beta=_number(cfg, "beta", float, 0.0, 1.0),
        seed=_number(cfg, "seed", int, 0),
        scheduler=scheduler,
        scheduler_kwargs=dict(scheduler_kwargs),
        eta=_number(cfg, "eta", float, 0.0),
        precision=precision,
        negative_prompt=str(_get(cfg, "negative_prompt") or ""),
        resolution=resolution,
        use_scene_size=bool(_get(cfg, "use_scene_size")),
        backbone=backbone,
        weights=str(Path(weights).expanduser().resolve()) if weights else None,
        grounding=OmegaConf.to_container(grounding, resolve=True) if isinstance(grounding, DictConfig) else {},
        backbone_sha256=content_fingerprint(backbone_path),
        weights_sha256=content_fingerprint(weights),
        batch_size=_number(cfg, "batch_size", int, 1),
        device=device,
    )


def output_names(scene: Scene) -> tuple[str, str]:
    return f"{scene.id}.png", f"{scene.id}_boxes.png"


def check_ids(scenes: Sequence[Scene], source: str) -> None:
    """Scene ids become file names: they must be usable as such and never collide."""
    owner: dict[str, str] = {}
    for scene in scenes:
        sid = scene.id
        if not sid or sid in (".", "..") or any(c in sid for c in '/\\\0') or sid.startswith("."):
            raise InputError(
                f"{source}: scene {sid!r}, field 'id': cannot be used as a file name "
                "(no '/', '\\', leading '.', or empty id)"
            )
        for name in output_names(scene):
            if name in owner:
                raise InputError(
                    f"{source}: scene {sid!r}, field 'id': its output {name} collides with scene {owner[name]!r}"
                )
            owner[name] = sid


def scene_size(scene: Scene, settings: Settings) -> tuple[int, int]:
    """(height, width) to draw ``scene`` at: the fixed resolution, or its own size on a multiple of 8."""
    if not settings.use_scene_size:
        return settings.resolution, settings.resolution
    return max(8, scene.height // 8 * 8), max(8, scene.width // 8 * 8)


def load_input(cfg: DictConfig) -> tuple[list[Scene], list[str]]:
    """Read and validate the whole scene file; returns the scenes and the warnings it raised."""
    source = str(_get(cfg, "input"))
    box_format = str(_get(cfg, "box_format"))
    if box_format not in BOX_FORMATS:
        raise InputError(f"setting 'box_format' must be one of {', '.join(BOX_FORMATS)}, got {box_format!r}")
    path = Path(source).expanduser()
    if not path.is_file():
        raise InputError(f"input file not found: {path}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            scenes = read_scenes(path, box_format=box_format, truncate=bool(_get(cfg, "truncate")))
        except SceneError as error:
            raise InputError(str(error)) from None
    if not scenes:
        raise InputError(f"{path}: no scenes")
    check_ids(scenes, str(path))
    messages = [str(w.message) for w in caught]
    vocabulary = cfg.get("vocabulary")
    if vocabulary:
        messages += out_of_vocabulary(scenes, str(vocabulary), str(path))
    return scenes, messages


def out_of_vocabulary(scenes: Sequence[Scene], vocabulary: str, source: str) -> list[str]:
    """One warning per phrase outside the training vocabulary (generation still runs: CLIP embeds any
    phrase, but the adapter only learnt the training ones)."""
    from ..data.annotations import load_vocabulary

    try:
        known = set(load_vocabulary(vocabulary).phrases())
    except (FileNotFoundError, ValueError, KeyError) as error:
        raise InputError(f"setting 'vocabulary': {error}") from None
    seen: dict[str, str] = {}
    for scene in scenes:
        for k, item in enumerate(scene.interactions):
            for name in ("subject", "action", "object"):
                phrase = getattr(item, name)
                if phrase not in known and phrase not in seen:
                    seen[phrase] = f"scene {scene.id!r}, field 'interactions[{k}].{name}'"
    return [f"{source}: {where}: {phrase!r} is outside the training vocabulary ({vocabulary})"
            for phrase, where in seen.items()]


# -- the output folder -----------------------------------------------------------------------------
def read_metadata(path: Path) -> tuple[dict[str, dict[str, Any]], bool]:
    """Records by scene id (the last one wins), and whether the file needs rewriting (bad lines)."""
    records: dict[str, dict[str, Any]] = {}
    dirty = False
    if not path.is_file():
        return records, dirty
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            records[str(record["id"])] = record
        except (json.JSONDecodeError, KeyError, TypeError):
            dirty = True  # a line cut short by a crash: dropped, its scene is generated again
    return records, dirty


@contextlib.contextmanager
def folder_lock(output_dir: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``output_dir`` itself for the whole run, or refuse at once.

    Two commands writing one folder would interleave ``metadata.jsonl`` and mix settings; the second
    one stops with a message saying so. The lock is on the folder (no lock file to leave behind) and
    the kernel drops it when its holder dies, even by SIGKILL, so a crashed run never blocks the next.
    """
    import fcntl

    created = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(output_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(
                f"setting 'output_dir': {output_dir} is in use by another interactdiffusion-generate; wait for it "
                "to finish (the same command run again then resumes) or use another output_dir"
            ) from None
        yield
    finally:
        os.close(fd)
        if created and not any(output_dir.iterdir()):
            output_dir.rmdir()  # refused before anything was written: leave no empty folder


def append_line(path: Path, record: dict[str, Any]) -> None:
    """One JSON line in a single write, flushed to disk before the next scene."""
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def plan_resume(
    scenes: Sequence[Scene], output_dir: Path, settings: Settings, draw_boxes: bool
) -> tuple[list[Scene], list[Scene]]:
    """(scenes to generate, finished scenes missing only their overlay); compacts ``metadata.jsonl``.

    A scene counts as done when its record and image exist. Records made with other settings, or for a
    scene whose definition changed, are an error: mixing them would silently corrupt the output.
    """
    meta_path = output_dir / METADATA_NAME
    records, dirty = read_metadata(meta_path)
    wanted = settings.record()
    by_id = {s.id: s for s in scenes}
    kept: dict[str, dict[str, Any]] = {}
    for sid, record in records.items():
        image = output_dir / record.get("image", f"{sid}.png")
        if not image.is_file():
            dirty = True
            continue
        kept[sid] = record
        if sid not in by_id:
            continue
        # the adapter's grounding block is read from the loaded weights (identified by their sha256)
        old = {k: v for k, v in record.get("settings", {}).items() if k != "grounding"}
        detail = settings_difference(old, {k: v for k, v in wanted.items() if k != "grounding"})
        if detail is not None:
            raise InputError(
                f"{output_dir} holds images made with other settings ({detail}); "
                "use a new output_dir or the same settings to resume"
            )
        if record.get("scene") != by_id[sid].to_dict():
            raise InputError(
                f"scene {sid!r}: {output_dir / record.get('image', '')} was made from a different definition "
                "of this scene; use a new output_dir or remove that image to make it again"
            )
    if dirty:
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept.values())
        write_text_atomic(meta_path, lines)
    todo = [s for s in scenes if s.id not in kept]
    overlays = []
    if draw_boxes:
        overlays = [s for s in scenes if s.id in kept and not (output_dir / output_names(s)[1]).is_file()]
    return todo, overlays


def batches(scenes: Sequence[Scene], settings: Settings) -> Iterator[tuple[tuple[int, int], list[Scene]]]:
    """Scenes in input order, ``batch_size`` at a time, one image size per batch."""
    groups: dict[tuple[int, int], list[Scene]] = {}
    for scene in scenes:
        groups.setdefault(scene_size(scene, settings), []).append(scene)
    for size, group in groups.items():
        for start in range(0, len(group), settings.batch_size):
            yield size, group[start : start + settings.batch_size]


def sample(pipe, scenes: Sequence[Scene], settings: Settings, size: tuple[int, int], images_per_scene: int = 1):
    """One pipeline call with the recorded settings (also the app's Generate: the same image per scene);
    PIL images, after checking they are finite."""
    height, width = size
    scenes = list(scenes)
    out = pipe(
        scenes,
        height=height,
        width=width,
        num_inference_steps=settings.steps,
        guidance_scale=settings.guidance_scale,
        interactdiffusion_scheduled_sampling_beta=settings.beta,
        negative_prompt=settings.negative_prompt or None,  # none: SDXL zeroes the negative half
        eta=settings.eta,
        seed=settings.seed,
        num_images_per_prompt=images_per_scene,
        output_type="np",
    )
    out.images = finite_images(pipe, out.images, scenes, settings, images_per_scene)
    return out


# -- the run -------------------------------------------------------------------------------------
def build_pipeline(cfg: DictConfig, settings: Settings):
    from ..models.backbone import BackboneError, build_backbone
    from ..models.checkpoints import CheckpointError
    from ..pipeline import load_pipeline, make_scheduler

    def backbone():
        spec = OmegaConf.to_container(cfg.backbone, resolve=True)
        return build_backbone(**spec, grounding=dict(settings.grounding) or None)

    def scheduler_for(config):
        return make_scheduler(settings.scheduler, config, **settings.scheduler_kwargs)

    try:
        pipe, what = load_pipeline(
            backbone, settings.weights, scheduler="plms", precision=settings.precision, device=settings.device
        )
    except (BackboneError, CheckpointError, FileNotFoundError) as error:
        raise InputError(str(error)) from None
    pipe.scheduler = scheduler_for(dict(pipe.scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    log.info("loaded %s; scheduler %s, %s on %s", what, type(pipe.scheduler).__name__, settings.precision,
             settings.device)
    return pipe


def adopt_loaded_adapter(settings: Settings, pipe, scenes: Sequence[Scene], truncate: bool) -> Settings:
    """The settings with the grounding block of the adapter actually loaded (a GLIGEN adapter is recorded
    as GLIGEN whatever ``model=`` said), after checking every scene against *its* interaction limit
    (4 for the HOI-Shapes adapters, not the config's 30): an error naming the scene, or with
    ``truncate=true`` a warning (the pipeline keeps the first ones)."""
    from ..pipeline import grounding_config_of

    position_net = pipe.unet.position_net
    limit = int(getattr(position_net, "max_interactions", MAX_INTERACTIONS))
    for scene in scenes:
        if len(scene.interactions) > limit:
            message = (f"scene {scene.id!r}, field 'interactions': {len(scene.interactions)} interactions; the "
                       f"loaded adapter ({settings.weights or settings.backbone}) takes at most {limit}")
            if not truncate:
                raise InputError(message + " (truncate=true keeps the first ones with a warning)")
            log.warning("%s; only the first %d are used", message, limit)
    return replace(settings, grounding=grounding_config_of(position_net))


def finite_images(pipe, arrays, scenes: Sequence[Scene], settings: Settings, per_scene: int = 1) -> list:
    """PIL images of the pipeline's float output, after checking it is finite: NaN weights (or an fp16
    overflow) would otherwise be saved as black images and recorded as done."""
    import numpy as np

    for k, array in enumerate(arrays):
        scene = scenes[k // per_scene]
        if not np.isfinite(array).all():
            raise InputError(
                f"scene {scene.id!r}: the image has non-finite values (NaN/inf) with weights "
                f"{settings.weights or '(none)'} on backbone {settings.backbone} at {settings.precision}; "
                "check those weights (or try precision=fp32); nothing was recorded for this scene"
            )
    return pipe.numpy_to_pil(np.asarray(arrays))


def prepare_phrases(pipe, cfg: DictConfig, scenes: Sequence[Scene]) -> None:
    """Embed every phrase of the job once, before any image: embeddings never depend on batching.

    ``phrase_cache``: a file in the training cache's format (``data/phrase_cache.py``; the official
    ``clip_phrases_feature_cache.pth`` is read too), or a folder, where the file is named by the text
    encoder's fingerprint exactly as training's ``recipe.phrase_cache_dir`` names it.
    """
    from ..data.phrase_cache import PhraseCacheError, phrase_cache_file, read_phrase_table, write_phrase_table
    from ..models.backbone import module_fingerprint

    cache = cfg.get("phrase_cache")
    path = Path(cache).expanduser() if cache else None
    fingerprint = module_fingerprint(pipe.phrase_encoder.text_encoder) if path else None  # both encoders for XL
    if path is not None and (path.is_dir() or not path.suffix):
        path = phrase_cache_file(path, fingerprint)
    if path is not None and path.is_file():
        try:
            pipe.preload_phrases(read_phrase_table(path, fingerprint))
        except (PhraseCacheError, ValueError) as error:
            raise InputError(f"setting 'phrase_cache': {error}") from None
    phrases = sorted({p for s in scenes for i in s.interactions for p in (i.subject, i.object, i.action)})
    known = set(pipe.phrase_table())
    missing = [p for p in phrases if p not in known]
    if missing:
        log.info("embedding %d phrases", len(missing))
        pipe.encode_phrases(missing)
    if path is not None and (missing or not path.is_file()):
        write_phrase_table(path, pipe.phrase_table(), fingerprint)


def progress_bar(enabled: bool):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]generate"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


def run(cfg: DictConfig) -> int:
    """Validate everything, then generate what is not there yet. Returns the number of new images."""
    settings = read_settings(cfg)
    scenes, input_warnings = load_input(cfg)
    for message in input_warnings:
        log.warning("%s", message)
    output_dir = Path(str(_get(cfg, "output_dir"))).expanduser()
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"setting 'output_dir': {output_dir} exists and is not a folder")
    with folder_lock(output_dir):
        return _generate(cfg, settings, scenes, output_dir)


def _generate(cfg: DictConfig, settings: Settings, scenes: Sequence[Scene], output_dir: Path) -> int:
    """:func:`run` once it holds the output folder."""
    from PIL import Image

    from ..evaluation.image_io import save_png_atomic
    from ..visualize import draw_scene

    draw_boxes = bool(cfg.get("draw_boxes", True))
    todo, overlays = plan_resume(scenes, output_dir, settings, draw_boxes)
    if len(todo) < len(scenes):
        log.info("%d of %d scenes already in %s; generating %d", len(scenes) - len(todo), len(scenes), output_dir,
                 len(todo))
    for scene in overlays:
        image_name, boxes_name = output_names(scene)
        with Image.open(output_dir / image_name) as image:
            save_png_atomic(draw_scene(image, scene), output_dir / boxes_name)
    if not todo:
        log.info("nothing to generate: every scene is in %s", output_dir)
        return 0

    pipe = build_pipeline(cfg, settings)
    settings = adopt_loaded_adapter(settings, pipe, todo, bool(_get(cfg, "truncate")))
    output_dir.mkdir(parents=True, exist_ok=True)
    prepare_phrases(pipe, cfg, todo)
    meta_path = output_dir / METADATA_NAME
    record = settings.record()
    made = 0
    with progress_bar(bool(cfg.get("progress", True))) as bar:
        task = bar.add_task("generate", total=len(todo))
        for (height, width), batch in batches(todo, settings):
            out = sample(pipe, batch, settings, (height, width))
            for scene, image, seed in zip(batch, out.images, out.seeds):
                image_name, boxes_name = output_names(scene)
                save_png_atomic(image, output_dir / image_name)
                if draw_boxes:
                    save_png_atomic(draw_scene(image, scene), output_dir / boxes_name)
                append_line(meta_path, {
                    "id": scene.id,
                    "image": image_name,
                    "boxes_image": boxes_name if draw_boxes else None,
                    "seed": seed,
                    "height": height,
                    "width": width,
                    "scene": scene.to_dict(),
                    "settings": record,
                })
                made += 1
                bar.advance(task)
    log.info("wrote %d images to %s", made, output_dir)
    return made


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="generate")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except InputError as error:
        print(f"interactdiffusion-generate: error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def main() -> None:
    """Console entry point (``interactdiffusion-generate key=value ...``)."""
    _hydra_main()


if __name__ == "__main__":
    main()
