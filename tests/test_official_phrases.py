"""The phrases fed to the text encoder (tokens and captions) are the official release's, from every format.

The official phrase cache ``DATA/clip_phrases_feature_cache.pth`` (whose embeddings the released weights
were trained on) has 197 keys: the 80 object names and the 117 action phrases listed below, with HICO-DET's
own spellings ("controling", "tieing", ...) and "with" for ``no_interaction``.
"""

from __future__ import annotations

import pytest

from interactdiffusion.data.annotations import load_annotations
from interactdiffusion.data.layouts import layout_scenes
from interactdiffusion.data.synthetic import hico_verbs_vocabulary, write_synthetic_hicodet
from interactdiffusion.vocab import (
    COCO_CATEGORIES,
    HICO_VERBS,
    official_action_phrase,
    official_phrases,
    phrase_of,
)

OFFICIAL_ACTION_PHRASES = [
    "adjusting", "assembling", "blocking", "blowing", "boarding", "breaking", "brushing with", "buying",
    "carrying", "catching", "chasing", "checking", "cleaning", "controling", "cooking", "cutting",
    "cutting with", "directing", "dragging", "dribbling", "drinking with", "driving", "drying", "eating",
    "eating at", "exiting", "feeding", "filling", "flipping", "flushing", "flying", "greeting", "grinding",
    "grooming", "herding", "hitting", "holding", "hopping on", "hosing", "hugging", "hunting", "inspecting",
    "installing", "jumping", "kicking", "kissing", "lassoing", "launching", "licking", "lying on", "lifting",
    "lighting", "loading", "losing", "making", "milking", "moving", "with", "opening", "operating", "packing",
    "painting", "parking", "paying", "peeling", "petting", "picking", "picking up", "pointing", "pouring",
    "pulling", "pushing", "racing", "reading", "releasing", "repairing", "riding", "rowing", "running",
    "sailing", "scratching", "serving", "setting", "shearing", "signing", "siping", "sitting at", "sitting on",
    "sliding", "smelling", "spining", "squeezing", "stabbing", "standing on", "standing under", "sticking",
    "stiring", "stopping at", "straddling", "swinging", "tagging", "talking on", "teaching", "texting on",
    "throwing", "tieing", "toasting", "training", "turning", "typing on", "walking", "washing", "watching",
    "waving", "wearing", "wielding", "zipping",
]


def test_the_197_official_phrases():
    assert len(OFFICIAL_ACTION_PHRASES) == len(HICO_VERBS) == 117
    assert [official_action_phrase(v) for v in HICO_VERBS] == OFFICIAL_ACTION_PHRASES
    phrases = official_phrases()
    assert len(phrases) == len(set(phrases)) == 197
    assert phrases[:80] == sorted(phrase_of(name) for _, name in COCO_CATEGORIES)
    assert {"hair drier", "sports ball", "tv", "cell phone"} <= set(phrases[:80])
    assert phrases[80:] == OFFICIAL_ACTION_PHRASES
    # A verb from outside HICO-DET keeps the file's own "-ing" form, or correct English without one.
    assert official_action_phrase("juggle", "juggling") == "juggling"
    assert official_action_phrase("stir", "stirring") == "stiring"  # HICO-DET's spelling wins


@pytest.fixture(scope="module")
def three_formats(tmp_path_factory):
    root = tmp_path_factory.mktemp("hico117")
    out = write_synthetic_hicodet(root, num_train=70, num_test=50, vocab=hico_verbs_vocabulary(),
                                  write_images=False, max_pairs=4)
    cache = tmp_path_factory.mktemp("cache")
    loaded = {
        "mat": load_annotations(out.anno_bbox_mat, "test", cache_dir=cache),
        "instances": load_annotations(out.instances_test, "test", cache_dir=cache),
        # the QPIC json has no names: its vocabulary comes from the instances json given with it
        "qpic": load_annotations(out.test_hico, "test", vocabulary=out.instances_test, cache_dir=cache),
    }
    return out, loaded


def test_three_formats_give_the_official_phrases(three_formats):
    out, loaded = three_formats
    for fmt, parsed in loaded.items():
        vocab = parsed.vocab
        by_verb = {vocab.verbs[v]: vocab.action_phrase(v) for v in range(vocab.num_verbs)}
        assert [by_verb[v] for v in HICO_VERBS] == OFFICIAL_ACTION_PHRASES, fmt
        assert set(vocab.phrases()) == set(official_phrases()), fmt
    # The instances json carries no "-ing" forms at all: they are rebuilt with HICO-DET's spellings.
    assert loaded["instances"].vocab.verb_ing == loaded["mat"].vocab.verb_ing


def test_scenes_tokens_and_captions_agree_across_formats(three_formats):
    _, loaded = three_formats
    scenes = {fmt: list(layout_scenes(a.records, a.vocab)) for fmt, a in loaded.items()}
    actions = [i.action for s in scenes["mat"] for i in s.interactions]
    assert len(set(actions)) > 60  # most verbs are in the test split
    assert "with" in actions and "no interaction" not in actions
    for fmt in ("instances", "qpic"):
        assert [s.interactions for s in scenes[fmt]] == [s.interactions for s in scenes["mat"]], fmt
        assert [s.caption for s in scenes[fmt]] == [s.caption for s in scenes["mat"]], fmt
    captions = " ".join(s.caption for s in scenes["mat"])
    assert "is with a" in captions and "no interaction" not in captions
    assert set(actions) <= set(OFFICIAL_ACTION_PHRASES)
