"""The page: a box canvas, one row of pickers per interaction, settings, Generate, scene import/export.

Boxes are drawn with ``gradio_image_annotation`` (drag on the canvas, then pick the box's role,
``subject k`` or ``object k``, in its dialog). Every handler turns bad input into the status line at the
top of the page; nothing raises into Gradio, so the page never shows a stack trace.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from gradio_image_annotation import image_annotator
from PIL import Image

from ..evaluation.image_io import save_png_atomic
from ..generation import InputError
from ..scene import Scene, SceneError, read_scenes
from ..visualize import draw_scene
from .layout import (
    LayoutError,
    PhraseChoices,
    Triplet,
    box_colours,
    box_labels,
    layout_from_scene,
    scene_from_layout,
)
from .model import AppModel, PageSettings

log = logging.getLogger("interactdiffusion.app")

SCENE_FILE = "scene.json"
# Generated images are small for toy backbones (32 px): shown enlarged, pixels kept sharp.
MIN_SHOWN = 256
HELP = (
    "Drag on the canvas to draw a box, then choose its role in the box's dialog: **subject k** (red) or "
    "**object k** (blue) of interaction *k*. The action's box (green in the overlay) lies between them."
)


def canvas(width: int, height: int) -> np.ndarray:
    """A white canvas with a faint 8x8 grid to draw on."""
    image = np.full((height, width, 3), 255, dtype=np.uint8)
    for k in range(1, 8):
        image[round(k * height / 8), :] = 232
        image[:, round(k * width / 8)] = 232
    return image


def enlarged(image: Image.Image) -> Image.Image:
    scale = max(1, -(-MIN_SHOWN // min(image.size)))
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST) if scale > 1 else image


def message(kind: str, text: str) -> str:
    prefix = {"error": "**Error:** ", "ok": "**Done:** ", "note": ""}[kind]
    return prefix + text


def shown(status: gr.Markdown) -> Callable:
    """Run a handler; any refusal (or surprise) becomes the status line instead of a stack trace."""

    def wrap(handler: Callable[..., dict]) -> Callable[..., dict]:
        @functools.wraps(handler)
        def run(*args):
            try:
                return handler(*args)
            except (LayoutError, InputError, SceneError) as error:
                return {status: message("error", str(error))}
            except Exception as error:  # noqa: BLE001 - shown in the page, logged in full
                log.exception("unexpected error in %s", handler.__name__)
                return {status: message("error", f"unexpected {type(error).__name__}: {error} (details in the terminal)")}

        return run

    return wrap


def build_ui(model: AppModel, choices: PhraseChoices, vocabulary_source: str, *, max_rows: int = 8,
             canvas_size: int = 512, max_images: int = 8, output_dir: Path, load_error: str | None = None) -> gr.Blocks:
    """The Gradio Blocks of the app (not launched)."""
    output_dir = Path(output_dir)
    defaults = model.cfg

    def outputs_folder() -> Path:
        folder = output_dir / time.strftime("%Y%m%d-%H%M%S")
        suffix, k = folder, 1
        while suffix.exists():
            suffix, k = folder.with_name(f"{folder.name}-{k}"), k + 1
        suffix.mkdir(parents=True)
        return suffix

    with gr.Blocks(title="InteractDiffusion layout editor", analytics_enabled=False) as page:
        gr.Markdown("## InteractDiffusion layout editor")
        status = gr.Markdown(
            message("error", load_error) if load_error else message("note", f"Loaded {model.loaded}."),
            elem_id="status",
        )
        with gr.Row():
            with gr.Column(scale=3):
                annotator = image_annotator(
                    {"image": canvas(canvas_size, canvas_size), "boxes": []},
                    label_list=box_labels(max_rows),
                    label_colors=box_colours(max_rows),
                    box_min_size=0,
                    sources=None,
                    show_clear_button=False,
                    show_download_button=False,
                    show_remove_button=True,
                    handles_cursor=True,
                    label="layout",
                    elem_id="layout",
                )
                gr.Markdown(HELP)
            with gr.Column(scale=2):
                count = gr.Slider(0, max_rows, value=1, step=1, label="interactions", elem_id="count")
                rows, pickers = [], []
                for k in range(max_rows):
                    with gr.Row(visible=k < 1) as row:
                        for role, options in (("subject", choices.subjects), ("action", choices.actions),
                                              ("object", choices.objects)):
                            pickers.append(gr.Dropdown(
                                options, value=None, label=f"{role} {k + 1}", allow_custom_value=True,
                                filterable=True, elem_id=f"{role}-{k + 1}", min_width=100,
                            ))
                    rows.append(row)
                vocab_note = gr.Markdown(f"Vocabulary: {vocabulary_source}.", elem_id="vocabulary")
        with gr.Row():
            prompt = gr.Textbox(label="prompt (empty: the training caption built from the triplets)",
                                elem_id="prompt", scale=2)
            negative = gr.Textbox(value=str(defaults.get("negative_prompt") or ""), label="negative prompt",
                                  elem_id="negative", scale=2)
        with gr.Row():
            seed = gr.Number(value=int(defaults.seed), precision=0, label="seed", elem_id="seed")
            steps = gr.Number(value=int(defaults.steps), precision=0, label="steps", elem_id="steps")
            guidance = gr.Number(value=float(defaults.guidance_scale), label="guidance", elem_id="guidance")
            beta = gr.Slider(0.0, 1.0, value=float(defaults.beta), step=0.05, label="β (interaction steps)",
                             elem_id="beta")
            images = gr.Slider(1, max_images, value=1, step=1, label="number of images", elem_id="images")
        generate = gr.Button("Generate", variant="primary", elem_id="generate")
        with gr.Row():
            gallery = gr.Gallery(label="images", columns=4, elem_id="gallery", height=300, object_fit="contain")
            overlay = gr.Image(label="layout on the first image", type="pil", elem_id="overlay", height=300)
        with gr.Accordion("Scene file and command line", open=True):
            with gr.Row():
                upload = gr.UploadButton("Import scene JSON", file_types=[".json", ".jsonl", ".yaml", ".yml"],
                                         elem_id="import")
                export = gr.Button("Export scene JSON", elem_id="export")
            exported = gr.File(label="scene file (what interactdiffusion-generate reads)", elem_id="scene-file")
            scene_json = gr.Code(language="json", label="scene JSON", elem_id="scene-json", lines=6)
            command = gr.Textbox(label="CLI command (copy it: makes the first image again)", buttons=["copy"],
                                 interactive=False, elem_id="command", lines=2)
        with gr.Accordion("Model", open=False):
            weights = gr.Textbox(value=str(defaults.get("weights") or ""), label="weights (same backbone)",
                                 elem_id="weights")
            load = gr.Button("Load weights", elem_id="load")

        page_inputs = [annotator, count, *pickers, prompt, negative, seed, steps, guidance, beta, images]

        def read_page(annotation, rows_shown, *values) -> tuple[Scene, PageSettings]:
            picked = values[: 3 * max_rows]
            text, neg, seed_v, steps_v, guidance_v, beta_v, n = values[3 * max_rows:]
            triplets = [Triplet(*(v or "" for v in picked[3 * k: 3 * k + 3])) for k in range(int(rows_shown))]
            if annotation is None or annotation.get("image") is None:
                raise LayoutError("The canvas is empty: reload the page.")
            height, width = np.asarray(annotation["image"]).shape[:2]
            for name, value in (("seed", seed_v), ("steps", steps_v), ("guidance", guidance_v)):
                if value is None:
                    raise InputError(f"{name} is empty")
            scene = scene_from_layout(annotation.get("boxes") or [], triplets, width=width, height=height,
                                      prompt=text, seed=int(seed_v))
            settings = PageSettings(negative_prompt=neg or "", seed=int(seed_v), steps=int(steps_v),
                                    guidance_scale=float(guidance_v), beta=float(beta_v), num_images=int(n))
            return scene, settings

        def notes_for(triplets: list[Triplet]) -> str:
            outside = choices.outside(triplets)
            text = f"Vocabulary: {vocabulary_source}."
            if outside:
                text += "\n\n" + "\n".join(f"- **{line}**" for line in outside)
            return text

        def write_scene(scene: Scene, settings: PageSettings) -> tuple[Path, str, str]:
            folder = outputs_folder()
            path = folder / SCENE_FILE
            text = json.dumps([scene.to_dict()], indent=2) + "\n"
            path.write_text(text, encoding="utf-8")
            return path, text, model.cli_command(path, folder / "images", settings)

        @shown(status)
        def on_generate(*values):
            scene, settings = read_page(*values)
            model.check(scene, settings, max_images)
            started = time.time()
            made = model.generate(scene, settings, max_images)
            path, text, cli = write_scene(scene, settings)
            for k, image in enumerate(made):
                save_png_atomic(image, path.parent / f"image_{k}.png")
            outside = choices.outside([Triplet(i.subject, i.action, i.object) for i in scene.interactions])
            note = f" Note: {'; '.join(outside)}." if outside else ""
            return {
                status: message("ok", f"Generated {len(made)} image{'s' * (len(made) > 1)} in "
                                      f"{time.time() - started:.1f} s; saved in {path.parent}.{note}"),
                gallery: [enlarged(image) for image in made],
                overlay: draw_scene(made[0], scene, min_size=MIN_SHOWN),
                exported: str(path),
                scene_json: text,
                command: cli,
            }

        @shown(status)
        def on_export(*values):
            scene, settings = read_page(*values)
            path, text, cli = write_scene(scene, settings)
            return {status: message("ok", f"Scene written to {path}."), exported: str(path), scene_json: text,
                    command: cli}

        @shown(status)
        def on_import(file):
            path = Path(file if isinstance(file, str) else file.name)
            try:
                scenes = read_scenes(path)
            except SceneError as error:  # named by the file the user picked, not Gradio's upload copy
                raise InputError(str(error).replace(str(path), path.name)) from None
            if not scenes:
                raise InputError(f"{path.name}: no scenes")
            scene = scenes[0]
            if len(scene.interactions) > max_rows:
                raise InputError(f"{path.name}: scene {scene.id!r} has {len(scene.interactions)} interactions; "
                                 f"the page shows at most {max_rows} (app.max_rows)")
            boxes, triplets = layout_from_scene(scene)
            values: dict[Any, Any] = {
                annotator: {"image": canvas(scene.width, scene.height), "boxes": boxes},
                count: len(triplets),
                prompt: scene.prompt or "",
                status: message("ok", f"Imported scene {scene.id!r} from {path.name}"
                                      + (f" (the first of {len(scenes)})" if len(scenes) > 1 else "") + "."),
            }
            if scene.seed is not None:
                values[seed] = scene.seed
            for k in range(max_rows):
                triplet = triplets[k] if k < len(triplets) else Triplet()
                for j, value in enumerate((triplet.subject, triplet.action, triplet.object)):
                    values[pickers[3 * k + j]] = value or None
                values[rows[k]] = gr.update(visible=k < len(triplets))
            values[vocab_note] = notes_for(triplets)
            return values

        @shown(status)
        def on_load(path):
            return {status: message("ok", f"Loaded {model.load(path)}.")}

        def on_count(n):
            return [gr.update(visible=k < int(n)) for k in range(max_rows)]

        def on_pick(n, *picked):
            return notes_for([Triplet(*(v or "" for v in picked[3 * k: 3 * k + 3])) for k in range(int(n))])

        everything = [status, gallery, overlay, exported, scene_json, command]
        generate.click(on_generate, page_inputs, everything)
        export.click(on_export, page_inputs, [status, exported, scene_json, command])
        upload.upload(on_import, upload, [status, annotator, count, prompt, seed, *pickers, *rows, vocab_note])
        load.click(on_load, weights, status)
        count.change(on_count, count, rows)
        for picker in pickers:
            picker.change(on_pick, [count, *pickers], vocab_note)
    return page
