"""``interactdiffusion-generate``: a file of scenes → one image per scene, resumable.

    interactdiffusion-generate backbone=sd14 weights=interact-diffusion-v1.pth input=scenes.json output_dir=out

Per scene: ``<id>.png``, ``<id>_boxes.png`` (the layout drawn on it) and a line of ``metadata.jsonl``
(scene, seed, settings). The whole input is validated before anything is generated; bad input or
settings print one message naming the scene and field and exit with code 2. Files are written under a
temporary name and renamed, so a crash never leaves half an image; running the same command again skips
the scenes already written.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig

from ..config_path import config_dir
from ..generation import (
    METADATA_NAME,
    InputError,
    Settings,
    append_line,
    batches,
    build_pipeline,
    folder_lock,
    image_record,
    load_input,
    output_names,
    plan_resume,
    prepare_phrases,
    read_settings,
    sample,
)
from ..generation.building import adopt_loaded_adapter
from ..generation.settings import setting
from ..scene import Scene

log = logging.getLogger("interactdiffusion.generate")

EXIT_BAD_INPUT = 2


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
    output_dir = Path(str(setting(cfg, "output_dir"))).expanduser()
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
    settings = adopt_loaded_adapter(settings, pipe, todo, bool(setting(cfg, "truncate")))
    output_dir.mkdir(parents=True, exist_ok=True)
    prepare_phrases(pipe, cfg, todo)
    meta_path = output_dir / METADATA_NAME
    record = settings.record()
    made = 0
    with progress_bar(bool(cfg.get("progress", True))) as bar:
        task = bar.add_task("generate", total=len(todo))
        for size, batch in batches(todo, settings):
            out = sample(pipe, batch, settings, size)
            for scene, image, seed in zip(batch, out.images, out.seeds):
                image_name, boxes_name = output_names(scene)
                save_png_atomic(image, output_dir / image_name)
                if draw_boxes:
                    save_png_atomic(draw_scene(image, scene), output_dir / boxes_name)
                append_line(meta_path, image_record(scene, seed, size, record, draw_boxes))
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
