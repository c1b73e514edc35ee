"""interactdiffusion-app without a browser: page ↔ scene conversion, refusals, the CLI command, loading.

The browser test (tests/test_app_browser.py) drives the same page in Chromium.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from interactdiffusion.app.layout import (
    LayoutError,
    PhraseChoices,
    Triplet,
    layout_from_scene,
    scene_from_layout,
)
from interactdiffusion.app.model import AppModel, PageSettings, hydra_value, phrase_choices
from interactdiffusion.config_path import REPO_ROOT, config_dir
from interactdiffusion.generation import InputError, read_settings
from interactdiffusion.scene import Scene, read_scenes


def app_config(*overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("app", overrides=[f"paths.root_dir={REPO_ROOT}", "device=cpu", *overrides],
                       return_hydra_config=True)


def box(label, x1, y1, x2, y2):
    return {"label": label, "xmin": x1, "ymin": y1, "xmax": x2, "ymax": y2, "color": (0, 0, 0)}


HOLD = Triplet("person", "holding", "umbrella")


def test_drawn_boxes_become_a_normalised_scene_and_back():
    boxes = [box("subject 1", 64, 128, 256, 512), box("object 1", 256, 0, 384, 64)]
    scene = scene_from_layout(boxes, [HOLD], width=512, height=512, prompt=" ", seed=7)
    (inter,) = scene.interactions
    assert inter.subject_box == (0.125, 0.25, 0.5, 1.0) and inter.object_box == (0.5, 0.0, 0.75, 0.125)
    assert scene.prompt is None and scene.caption == "a person is holding a umbrella" and scene.seed == 7
    back, triplets = layout_from_scene(scene)
    assert triplets == [HOLD]
    assert [(b["label"], b["xmin"], b["ymin"], b["xmax"], b["ymax"]) for b in back] == [
        ("subject 1", 64, 128, 256, 512), ("object 1", 256, 0, 384, 64)]
    assert back[0]["color"] == (230, 57, 70) and back[1]["color"] == (29, 114, 243)  # red, blue


@pytest.mark.parametrize(("boxes", "rows", "expected"), [
    ([box("subject 1", 0, 0, 10, 10)], [HOLD], "has no object box: draw one and label it 'object 1'"),
    ([box("subject 1", 0, 0, 10, 10), box("object 1", 5, 5, 5, 20)], [HOLD],
     "Interaction 1, box 'object 1': box [0.009765625, 0.009765625, 0.009765625, 0.0390625] is empty"),
    ([box("", 0, 0, 10, 10)], [HOLD], "The box at [0, 0, 10, 10] is without a label"),
    ([box("subject 1", 0, 0, 10, 10), box("subject 1", 1, 1, 9, 9)], [HOLD], "Two boxes are labelled 'subject 1'"),
    ([box("object 2", 0, 0, 10, 10)], [HOLD], "Box 'object 2' belongs to interaction 2, but the page has 1"),
    ([box("subject 1", 0, 0, 10, 10), box("object 1", 0, 0, 10, 10)], [Triplet("person", "", "cup")],
     "Interaction 1: pick or type its action."),
])
def test_bad_layouts_are_refused_with_a_message(boxes, rows, expected):
    with pytest.raises(LayoutError) as caught:
        scene_from_layout(boxes, rows, width=512, height=512)
    assert expected in str(caught.value)


def test_free_text_is_marked_outside_the_training_vocabulary():
    choices, source = phrase_choices(app_config())
    assert source == "the HOI-Shapes world" and "holding" in choices.actions and "sports ball" in choices.objects
    assert choices.outside([HOLD, Triplet("person", "juggling", "sports_ball")]) == [
        "interaction 2: action 'juggling' is outside the training vocabulary"]
    unjudged = PhraseChoices(["person"], [], ["cup"])  # no verb list: actions are not judged
    assert unjudged.outside([Triplet("person", "juggling", "cup")]) == []


def test_hydra_value_keeps_commas_and_quotes_in_one_string():
    assert hydra_value("low quality, bad 'hands'") == r"'low quality, bad \'hands\''"
    assert hydra_value(None) == "null" and hydra_value(True) == "true" and hydra_value(0.5) == "0.5"
    assert hydra_value("/weights/a-1.safetensors") == "/weights/a-1.safetensors"
    assert hydra_value("null") == "'null'" and hydra_value("12") == "'12'" and hydra_value("") == "''"


def test_cli_command_composes_the_settings_the_page_generates_with(tmp_path):
    """The copied command, parsed as the shell and Hydra will, gives the generate CLI the same settings."""
    cfg = app_config("beta=0.4", "eta=0.0")
    model = AppModel(cfg, {"backbone": "shapes", "model": "shapes_interactdiffusion"}, ["beta=0.4", "eta=0.0",
                                                                                       "app.port=9999"])
    page = PageSettings(negative_prompt="blurry, 'odd' $HOME", seed=11, steps=3, guidance_scale=2.5, beta=0.3)
    command = model.cli_command(tmp_path / "scene.json", tmp_path / "out dir", page)
    argv = shlex.split(command)
    assert argv[0] == "interactdiffusion-generate" and not any(a.startswith("app.") for a in argv)
    assert "backbone=shapes" in argv and "steps=3" in argv, command
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        generate_cfg = compose("generate", overrides=argv[1:])
    assert generate_cfg.input == str(tmp_path / "scene.json") and generate_cfg.output_dir == str(tmp_path / "out dir")
    assert read_settings(generate_cfg).record() == read_settings(model.merged(page)).record()


def test_other_weights_refused_in_words_and_the_model_kept(tmp_path):
    """Weights for another backbone: an InputError (the page shows it), the loaded model stays."""
    model = AppModel(app_config("backbone=tiny", "model=interactdiffusion", "weights=null"))
    model.load()
    before = model.pipe
    with pytest.raises(InputError, match="not adapter keys of this UNet"):
        model.load(str(REPO_ROOT / "experiments/hoi-shapes/adapters/interactdiffusion.safetensors"))
    assert model.pipe is before and model.max_interactions == 30
    scene = Scene.from_dict({"id": "x", "interactions": [
        {"subject": "person", "action": "holding", "object": "cup",
         "subject_box": [0, 0, 0.5, 0.5], "object_box": [0.5, 0.5, 1, 1]}]})
    page = PageSettings("", 0, 1, 1.0, 1.0, num_images=9)
    with pytest.raises(InputError, match="number of images must be in"):
        model.check(scene, page, max_images=8)


def test_too_many_interactions_for_the_loaded_model():
    model = AppModel(app_config())
    model.load()
    assert model.max_interactions == 4  # the committed HOI-Shapes adapter
    scene = Scene.from_dict({"id": "x", "interactions": [
        {"subject": "person", "action": "holding", "object": "cup",
         "subject_box": [0, 0, 0.5, 0.5], "object_box": [0.5, 0.5, 1, 1]}] * 5})
    with pytest.raises(InputError, match="5 interactions, but the loaded model takes at most 4"):
        model.check(scene, PageSettings("", 0, 1, 1.0, 1.0), max_images=8)


def test_exported_scene_is_what_the_generate_cli_reads(tmp_path):
    scene = scene_from_layout([box("subject 1", 0, 0, 100, 200), box("object 1", 100, 100, 300, 300)], [HOLD],
                              width=400, height=300, seed=3)
    path = Path(tmp_path / "scene.json")
    path.write_text(json.dumps([scene.to_dict()]))
    (read,) = read_scenes(path)
    assert read == scene and read.width == 400 and read.height == 300


def test_cli_command_makes_the_pages_first_image_again(tmp_path):
    """Generate on the page's model, then run the copied command through the generate CLI's ``run``."""
    import numpy as np
    from PIL import Image

    from interactdiffusion.cli.generate import run

    model = AppModel(app_config(), {"backbone": "shapes", "model": "shapes_interactdiffusion"})
    model.load()
    scene = scene_from_layout([box("subject 1", 40, 60, 250, 500), box("object 1", 260, 200, 470, 420)], [HOLD],
                              width=512, height=512, seed=5)
    page = PageSettings(negative_prompt="blurry, dark", seed=5, steps=2, guidance_scale=3.0, beta=0.5, num_images=2)
    first, second = model.generate(scene, page)
    scene_file = tmp_path / "scene.json"
    scene_file.write_text(json.dumps([scene.to_dict()]))
    argv = shlex.split(model.cli_command(scene_file, tmp_path / "images", page))
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        assert run(compose("generate", overrides=argv[1:] + ["device=cpu", "progress=false"])) == 1
    again = np.asarray(Image.open(tmp_path / "images" / "scene.png"))
    assert np.array_equal(again, np.asarray(first)) and not np.array_equal(again, np.asarray(second))


def test_page_opens_with_the_load_error_when_the_weights_belong_to_another_backbone(tmp_path):
    from interactdiffusion.app.launch import build_app

    page, model = build_app(app_config("backbone=tiny", "model=interactdiffusion", f"app.output_dir={tmp_path}"))
    assert model.pipe is None
    status = next(block for block in page.blocks.values() if getattr(block, "elem_id", None) == "status")
    assert status.value.startswith("**Error:** the model did not load:") and "not adapter keys" in status.value
    with pytest.raises(InputError, match="no model is loaded .the model did not load"):
        model.check(Scene("x"), PageSettings("", 0, 1, 1.0, 1.0), max_images=8)


def test_pickers_offer_the_hico_det_vocabulary_found_under_the_data_dir(tmp_path):
    """backbone=sd-like: the vocabulary of ${paths.data_dir}/hico_20160224_det/anno_bbox.mat, else COCO objects."""
    from interactdiffusion.data.synthetic import write_synthetic_hicodet

    choices, source = phrase_choices(app_config("backbone=tiny", f"paths.data_dir={tmp_path}"))
    assert choices.actions == [] and "sports ball" in choices.objects and "not found" in source
    data = write_synthetic_hicodet(tmp_path / "hico_20160224_det", num_train=6, num_test=4, formats=("mat",),
                                   write_images=False)
    choices, source = phrase_choices(app_config("backbone=tiny", f"paths.data_dir={tmp_path}"))
    assert source.endswith("hico_20160224_det/anno_bbox.mat")
    assert set(choices.actions) == {data.vocab.action_phrase(v) for v in range(data.vocab.num_verbs)}
    assert choices.outside([Triplet("person", "juggling", "cup")]) == [
        "interaction 1: action 'juggling' is outside the training vocabulary"]
    with pytest.raises(InputError, match="app.vocabulary"):
        phrase_choices(app_config(f"app.vocabulary={tmp_path / 'missing.json'}"))
