"""The three annotation layouts parse to identical records, scipy's quirks included."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.io import loadmat

from interactdiffusion.data.annotations import detect_format, load_annotations, load_vocabulary
from interactdiffusion.data.boxes import continuous_to_one_based, one_based_to_continuous
from interactdiffusion.data.records import ImageRecord, PairRecord
from interactdiffusion.data.synthetic import (
    SYNTHETIC_ACTIONS,
    synthetic_vocabulary,
    with_train_counts,
    write_synthetic_hicodet,
)
from interactdiffusion.data.writers import (
    write_anno_bbox_mat,
    write_instances_json,
    write_qpic_json,
)
from interactdiffusion.vocab import verb_ing


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERACTDIFFUSION_CACHE_DIR", str(tmp_path / "cache"))


def pair(vocab, hoi, human, obj):
    c = vocab.classes[hoi]
    return PairRecord(one_based_to_continuous(human), one_based_to_continuous(obj), hoi, c.verb, c.object)


@pytest.fixture
def quirky(tmp_path):
    """Hand-made records hitting every simplify_cells quirk, written in all three layouts."""
    vocab = synthetic_vocabulary()
    train = [
        # one HOI with one human and one object: every struct array has a single element (→ dict)
        ImageRecord("HICO_train2015_00000001.jpg", 64, 48, [pair(vocab, 1, (1, 1, 64, 48), (10, 20, 30, 40))]),
        # one HOI, two people riding the same horse: connection [[1, 1], [2, 1]], one object box
        ImageRecord("HICO_train2015_00000002.jpg", 100, 80, [
            pair(vocab, 6, (1, 2, 40, 80), (20, 30, 90, 70)),
            pair(vocab, 6, (50, 2, 99, 79), (20, 30, 90, 70)),
        ]),
        # only an invisible HOI: empty bboxhuman/bboxobject/connection; kept and flagged
        ImageRecord("HICO_train2015_00000003.jpg", 50, 50, []),
        # two HOIs sharing the person (separate hoi entries, as the official file stores them)
        ImageRecord("HICO_train2015_00000004.jpg", 120, 90, [
            pair(vocab, 0, (5, 5, 60, 88), (30, 40, 110, 85)),
            pair(vocab, 1, (5, 5, 60, 88), (30, 40, 110, 85)),
        ]),
    ]
    # a test split of ONE image: the whole bbox_test struct array comes back as a single dict
    test = [ImageRecord("HICO_test2015_00000001.jpg", 70, 60, [pair(vocab, 3, (2, 3, 35, 60), (20, 25, 40, 45))])]
    vocab = with_train_counts(vocab, train)
    invisible = {"HICO_train2015_00000003.jpg": [4], "HICO_train2015_00000001.jpg": [7]}
    paths = {
        "mat": write_anno_bbox_mat(tmp_path / "anno_bbox.mat", train, test, vocab, invisible=invisible),
        "qpic_train": write_qpic_json(tmp_path / "annotations" / "trainval_hico.json", train, vocab),
        "qpic_test": write_qpic_json(tmp_path / "annotations" / "test_hico.json", test, vocab),
        "instances_train": write_instances_json(tmp_path / "instances_train2015.json", train, vocab),
        "instances_test": write_instances_json(tmp_path / "instances_test2015.json", test, vocab),
    }
    return vocab, train, test, paths


def test_box_convention_round_trip():
    assert one_based_to_continuous((1, 1, 640, 480)) == (0.0, 0.0, 640.0, 480.0)
    assert continuous_to_one_based(one_based_to_continuous((5, 7, 9, 11))) == (5.0, 7.0, 9.0, 11.0)
    # the +1 area convention of the official evaluation is the continuous area
    x1, y1, x2, y2 = one_based_to_continuous((10, 20, 30, 40))
    assert (x2 - x1) * (y2 - y1) == (30 - 10 + 1) * (40 - 20 + 1)


def test_the_mat_file_really_has_the_scipy_quirks(quirky):
    _, _, _, paths = quirky
    content = loadmat(paths["mat"], simplify_cells=True)
    assert isinstance(content["bbox_test"], dict)  # one image → dict, not a list
    first = content["bbox_train"][0]
    assert isinstance(first["hoi"], list) and isinstance(first["hoi"][0]["bboxhuman"], dict)
    assert first["hoi"][0]["connection"].shape == (2,)  # one row, squeezed
    assert content["bbox_train"][1]["hoi"]["connection"].shape == (2, 2)  # lone HOI → dict, M×2 connection
    invisible = content["bbox_train"][2]["hoi"]
    assert isinstance(invisible, dict) and invisible["invis"] == 1
    assert isinstance(invisible["bboxhuman"], np.ndarray) and invisible["bboxhuman"].size == 0
    assert [a["vname_ing"] for a in content["list_action"]] == [a[2] for a in SYNTHETIC_ACTIONS]


def test_three_formats_parse_to_identical_records(quirky, tmp_path):
    vocab, train, test, paths = quirky
    loaded = {
        "mat": (load_annotations(paths["mat"], "train"), load_annotations(paths["mat"], "test")),
        "qpic": (load_annotations(paths["qpic_train"]), load_annotations(paths["qpic_test"])),
        "instances": (load_annotations(paths["instances_train"]), load_annotations(paths["instances_test"])),
    }
    for fmt, (tr, te) in loaded.items():
        assert tr.format == fmt and tr.split == "train" and te.split == "test"
        assert tr.records == train, fmt
        assert te.records == test, fmt
        assert tr.vocab.to_dict() == vocab.to_dict(), fmt
        assert te.vocab.to_dict() == vocab.to_dict(), fmt
    mat_train = loaded["mat"][0]
    assert mat_train.skipped["invisible_hoi"] == 2
    assert mat_train.records[2].has_pairs is False  # kept in the index, flagged
    assert len(mat_train.non_empty()) == 3


def test_instances_class_branch_coco80_order(quirky, tmp_path):
    vocab, train, _, _ = quirky
    path = write_instances_json(tmp_path / "coco" / "instances_train2015.json", train, vocab, object_order="coco80")
    data = json.loads(path.read_text())
    assert data["objects"] != sorted(data["objects"])  # really the other index space
    assert load_annotations(path).records == train


@pytest.mark.parametrize("source", ["mat", "instances", "saved"])
def test_qpic_vocabulary_from_an_explicit_file(quirky, tmp_path, source):
    vocab, train, test, paths = quirky
    alone = tmp_path / "elsewhere" / "alone"  # no companion files within two levels
    qpic = write_qpic_json(alone / "test_hico.json", test, vocab)
    if source == "saved":
        vocab.save(tmp_path / "vocab.json")
        given = tmp_path / "vocab.json"
        with pytest.raises(Exception, match="no image size"):
            load_annotations(qpic, vocabulary=given)  # a saved vocabulary has no sizes
        loaded = load_annotations(qpic, vocabulary=given, image_dir=_images(alone / "images", test))
    else:
        given = paths["mat"] if source == "mat" else paths["instances_test"]  # counts: its training file
        loaded = load_annotations(qpic, vocabulary=given)
    assert loaded.records == test
    assert list(loaded.vocab.train_counts) == list(vocab.train_counts)


def _images(folder, records):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for r in records:
        Image.new("RGB", (r.width, r.height)).save(folder / r.file_name)
    return folder


def test_qpic_without_any_vocabulary_is_a_clear_error(quirky, tmp_path):
    vocab, _, test, _ = quirky
    qpic = write_qpic_json(tmp_path / "lonely" / "sub" / "test_hico.json", test, vocab)
    with pytest.raises(Exception, match="no class names"):
        load_annotations(qpic)


def test_rare_split_comes_from_training_counts(tmp_path):
    data = write_synthetic_hicodet(tmp_path / "syn", num_train=48, num_test=8, write_images=False)
    loaded = load_annotations(data.anno_bbox_mat, "test")
    counts = loaded.vocab.train_counts
    assert list(counts) == [sum(p.hoi == h for r in data.train_records for p in r.pairs) for h in range(12)]
    assert list(np.flatnonzero(loaded.vocab.rare_mask())) == [2, 8, 10]  # built rare on purpose
    assert (counts[loaded.vocab.rare_mask()] < 10).all() and (counts[~loaded.vocab.rare_mask()] >= 10).all()
    # an instances test file next to its training file takes the counts from it
    assert list(load_annotations(data.instances_test).vocab.train_counts) == list(counts)


def test_synthetic_generation_is_deterministic(tmp_path):
    a = write_synthetic_hicodet(tmp_path / "a", num_train=6, num_test=4, seed=3)
    b = write_synthetic_hicodet(tmp_path / "b", num_train=6, num_test=4, seed=3)
    c = write_synthetic_hicodet(tmp_path / "c", num_train=6, num_test=4, seed=4, write_images=False)
    assert a.train_records == b.train_records and a.test_records == b.test_records
    assert a.train_records != c.train_records
    for record in a.train_records:
        assert (a.train_image_dir / record.file_name).read_bytes() == (b.train_image_dir / record.file_name).read_bytes()
    assert a.instances_train.read_text() == b.instances_train.read_text()
    assert detect_format(a.anno_bbox_mat) == "mat" and detect_format(a.test_hico) == "qpic"


def test_verb_ing_forms_of_hico_verbs():
    cases = {"ride": "riding", "sit_on": "sitting_on", "cut_with": "cutting_with", "lie_on": "lying_on",
             "hug": "hugging", "open": "opening", "exit": "exiting", "control": "controling", "throw": "throwing",
             "drink_with": "drinking_with", "squeeze": "squeezing", "no_interaction": "no_interaction",
             "hop_on": "hopping_on", "text_on": "texting_on", "feed": "feeding", "dry": "drying"}
    assert {v: verb_ing(v) for v in cases} == cases


def test_load_vocabulary_from_each_source(quirky, tmp_path):
    vocab, _, _, paths = quirky
    vocab.save(tmp_path / "v.json")
    for source in (paths["mat"], paths["instances_train"], tmp_path / "v.json"):
        assert load_vocabulary(source).classes == vocab.classes


def _same(a, b, where="root"):
    """scipy's simplified value and the fast reader's are the same data."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for key in a:
            _same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{k}]")
    elif isinstance(a, np.ndarray) and a.size == 0:
        assert (isinstance(b, np.ndarray) and b.size == 0) or b == "", where
    else:
        assert np.array_equal(np.asarray(a), np.asarray(b)), where


def test_fast_mat_reader_equals_scipy(quirky, tmp_path):
    from scipy.io import savemat

    from interactdiffusion.data.formats.mat import read_anno_bbox_mat
    from interactdiffusion.data.formats.matfile import read_mat

    _, _, _, paths = quirky
    reference = loadmat(paths["mat"], simplify_cells=True)
    fast = read_mat(paths["mat"])
    for key in ("bbox_train", "bbox_test", "list_action"):
        _same(reference[key], fast[key], key)
    assert read_anno_bbox_mat(paths["mat"], reader="fast")[1] == read_anno_bbox_mat(paths["mat"], reader="scipy")[1]
    # other storage types and compression, as MATLAB itself may write them
    values = {"u8": np.arange(6, dtype=np.uint8).reshape(2, 3), "flag": np.array([[True, False]]),
              "text": "riding", "small": np.int16(-3), "empty": np.zeros((0, 3)), "half": np.float32(0.5)}
    savemat(tmp_path / "types.mat", values, do_compression=True)
    reference, fast = loadmat(tmp_path / "types.mat", simplify_cells=True), read_mat(tmp_path / "types.mat")
    for key in values:
        np.testing.assert_array_equal(np.asarray(fast[key]), np.asarray(reference[key]).astype(np.asarray(fast[key]).dtype))


def test_a_files_own_rare_list_wins_over_disagreeing_neighbour_counts(tmp_path, caplog):
    import logging

    data = write_synthetic_hicodet(tmp_path / "syn", num_train=24, num_test=6, write_images=False)
    counts = data.vocab.train_counts
    with caplog.at_level(logging.INFO, logger="interactdiffusion.data.annotations"):
        agreeing = load_annotations(data.instances_test, "test", cache_dir=False)
    assert np.array_equal(agreeing.vocab.train_counts, counts)  # the neighbour's real counts, and said so
    assert "rare split from the training counts of" in caplog.text and "hoi_vocabulary.json" in caplog.text

    content = json.loads(data.instances_test.read_text())
    flipped = content["rare"][0]  # one class the training counts call rare, the file calls non-rare
    content["rare"], content["non_rare"] = content["rare"][1:], content["non_rare"] + [flipped]
    data.instances_test.write_text(json.dumps(content))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="interactdiffusion.data.annotations"):
        own = load_annotations(data.instances_test, "test", cache_dir=False)
    assert sorted(np.flatnonzero(own.vocab.rare_mask()).tolist()) == sorted(content["rare"])
    assert "disagrees with the training counts" in caplog.text and "using the file's own list" in caplog.text
