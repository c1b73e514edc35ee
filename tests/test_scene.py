import json

import pytest

from interactdiffusion.scene import Interaction, Scene, SceneError, read_scenes, write_scenes_jsonl


def _inter(**over):
    base = dict(subject="person", action="riding", object="bicycle",
                subject_box=(0.1, 0.1, 0.5, 0.9), object_box=(0.2, 0.5, 0.8, 1.0))
    base.update(over)
    return Interaction(**base)


def test_caption_follows_the_training_recipe():
    scene = Scene("7", (_inter(), _inter(action="holding", object="cup")))
    assert scene.caption == "a person is riding a bicycle, a person is holding a cup"
    assert Scene("8", (_inter(),), prompt="custom").caption == "custom"


@pytest.mark.parametrize(
    "over, field",
    [
        (dict(subject_box=(0.1, 0.1, 1.2, 0.5)), "interactions[0].subject_box"),
        (dict(object_box=(0.5, 0.1, 0.5, 0.6)), "interactions[0].object_box"),
        (dict(action="  "), "interactions[0].action"),
    ],
)
def test_invalid_interactions_name_scene_and_field(over, field):
    with pytest.raises(SceneError) as err:
        Scene("s1", (_inter(**over),))
    assert "'s1'" in str(err.value) and field in str(err.value)


def test_more_than_30_interactions_is_an_error_unless_truncated():
    data = {"id": "big", "interactions": [_inter().to_dict()] * 31}
    with pytest.raises(SceneError, match="at most 30"):
        Scene.from_dict(data)
    with pytest.warns(UserWarning, match="truncated"):
        assert len(Scene.from_dict(data, truncate=True).interactions) == 30


def test_seed_depends_on_scene_not_position():
    assert Scene("12").seed_for(489) == 501
    assert Scene("x").seed_for(1) == Scene("x").seed_for(1) != Scene("y").seed_for(1)
    assert Scene("x", seed=5).seed_for(1) == 5


def test_jsonl_round_trip_keeps_extra_fields(tmp_path):
    scenes = [Scene("a", (_inter(),), extra={"file_name": "img.jpg"}), Scene("b", (), prompt="empty")]
    path = tmp_path / "s.jsonl"
    write_scenes_jsonl(scenes, path)
    back = read_scenes(path)
    assert back == scenes and back[0].extra["file_name"] == "img.jpg"


def test_pixel_boxes_and_file_errors(tmp_path):
    path = tmp_path / "s.json"
    item = _inter().to_dict()
    item["subject_box"], item["object_box"] = [64, 0, 128, 256], [0, 0, 256, 128]
    path.write_text(json.dumps([{"id": "p", "width": 256, "height": 256, "interactions": [item]}]))
    scene = read_scenes(path, box_format="pixels")[0]
    assert scene.interactions[0].subject_box == (0.25, 0.0, 0.5, 1.0)
    path.write_text(json.dumps([{"id": "d"}, {"id": "d"}]))
    with pytest.raises(SceneError, match="duplicate"):
        read_scenes(path)
    path.write_text("{not json")
    with pytest.raises(SceneError, match=str(path)):
        read_scenes(path)
