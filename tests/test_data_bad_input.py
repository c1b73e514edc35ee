"""Bad input: repaired and counted where a long run can go on, a precise error where it cannot."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image

from interactdiffusion.data.annotations import AnnotationError, UnknownFormatError, load_annotations
from interactdiffusion.data.dataset import HICOSampleDataset
from interactdiffusion.data.images import load_rgb, split_missing
from interactdiffusion.data.records import ImageRecord, PairRecord
from interactdiffusion.data.synthetic import synthetic_vocabulary, with_train_counts, write_synthetic_hicodet
from interactdiffusion.data.writers import write_anno_bbox_mat, write_instances_json, write_qpic_json

VOCAB = synthetic_vocabulary()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERACTDIFFUSION_CACHE_DIR", str(tmp_path / "cache"))


def _pair(hoi, human, obj):
    c = VOCAB.classes[hoi]
    return PairRecord(human, obj, hoi, c.verb, c.object)


# -- boxes --------------------------------------------------------------------------------------------
def test_out_of_image_boxes_are_clamped_and_degenerate_pairs_dropped(tmp_path):
    records = [ImageRecord("HICO_train2015_00000001.jpg", 100, 50, [
        _pair(0, (-5.0, 0.0, 60.0, 70.0), (10.0, 10.0, 30.0, 30.0)),  # sticks out: clamped
        _pair(1, (10.0, 10.0, 10.0, 30.0), (10.0, 10.0, 30.0, 30.0)),  # zero width: dropped
        _pair(1, (120.0, 10.0, 150.0, 30.0), (10.0, 10.0, 30.0, 30.0)),  # wholly outside: dropped
        _pair(2, (20.0, 5.0, 40.0, 45.0), (25.0, 10.0, 35.0, 20.0)),  # fine
    ])]
    vocab = with_train_counts(VOCAB, records)
    paths = [
        write_anno_bbox_mat(tmp_path / "anno_bbox.mat", records, [], vocab),
        write_instances_json(tmp_path / "instances_train2015.json", records, vocab),
        write_qpic_json(tmp_path / "annotations" / "trainval_hico.json", records, vocab),
    ]
    parsed = [load_annotations(p, "train") for p in paths]
    for loaded in parsed:
        pairs = loaded.records[0].pairs
        assert [p.hoi for p in pairs] == [0, 2]
        assert pairs[0].human_box == (0.0, 0.0, 60.0, 50.0)
        assert loaded.skipped["box_clamped_to_image"] == 2  # the first human box and the outside one
        assert loaded.skipped["pair_with_degenerate_box"] == 2
    assert parsed[0].records == parsed[1].records == parsed[2].records
    assert "pair_with_degenerate_box=2" in parsed[0].summary()


# -- ids and names -------------------------------------------------------------------------------------
def test_hoi_id_out_of_range_names_file_and_record(tmp_path):
    records = [ImageRecord("HICO_train2015_00000001.jpg", 64, 64, [_pair(0, (1.0, 1.0, 9.0, 9.0), (2.0, 2.0, 8.0, 8.0))]),
               ImageRecord("HICO_train2015_00000002.jpg", 64, 64, [_pair(3, (1.0, 1.0, 9.0, 9.0), (2.0, 2.0, 8.0, 8.0))])]
    path = write_instances_json(tmp_path / "instances_train2015.json", records, VOCAB)
    data = json.loads(path.read_text())
    data["annotation"][1]["hoi"] = [600]
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=r"instances_train2015.json: image 1 \(HICO_train2015_00000002.jpg\).*HOI id 601 is outside 1..12"):
        load_annotations(path)

    from scipy.io import loadmat, savemat

    mat = write_anno_bbox_mat(tmp_path / "anno_bbox.mat", records, [], VOCAB)
    content = loadmat(mat)
    content["bbox_train"][0, 1]["hoi"][0, 0]["id"] = np.array([[0.0]])
    savemat(mat, {k: v for k, v in content.items() if not k.startswith("__")})
    with pytest.raises(AnnotationError, match=r"bbox_train\]: image 1 \(HICO_train2015_00000002.jpg\), hoi\(1\): HOI id 0 is outside"):
        load_annotations(mat)


def test_unknown_names_and_ids_in_qpic(tmp_path):
    records = [ImageRecord("HICO_train2015_00000001.jpg", 64, 64, [_pair(0, (1.0, 1.0, 9.0, 9.0), (2.0, 2.0, 8.0, 8.0))])]
    vocab = with_train_counts(VOCAB, records)
    vocab.save(tmp_path / "hoi_vocabulary.json")
    path = tmp_path / "trainval_hico.json"

    def broken(edit):
        write_qpic_json(path, records, vocab)
        data = json.loads(path.read_text())
        edit(data[0])
        data[0]["width"], data[0]["height"] = 64, 64
        path.write_text(json.dumps(data))
        return path

    with pytest.raises(AnnotationError, match=r"image 0 \(HICO_train2015_00000001.jpg\), hoi_annotation\[0\]: object category_id 90 is not"):
        load_annotations(broken(lambda d: d["annotations"][1].update(category_id=90)))
    with pytest.raises(AnnotationError, match="verb category_id 118 is outside 1..11"):
        load_annotations(broken(lambda d: d["hoi_annotation"][0].update(category_id=118)))
    with pytest.raises(AnnotationError, match="hoi_category_id 1 disagrees with verb"):
        load_annotations(broken(lambda d: d["hoi_annotation"][0].update(category_id=vocab.verbs.index("ride") + 1)))
    with pytest.raises(AnnotationError, match="verb 'kick' with object 'bicycle' is not one of the vocabulary's HOI classes"):
        load_annotations(broken(lambda d: d["hoi_annotation"][0].update(category_id=vocab.verbs.index("kick") + 1)))


def test_unknown_object_name_in_instances(tmp_path):
    records = [ImageRecord("HICO_train2015_00000001.jpg", 64, 64, [_pair(0, (1.0, 1.0, 9.0, 9.0), (2.0, 2.0, 8.0, 8.0))])]
    path = write_instances_json(tmp_path / "instances_train2015.json", records, VOCAB)
    data = json.loads(path.read_text())
    data["annotation"][0]["verb"] = [VOCAB.verbs.index("ride")]
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=r"image 0 \(HICO_train2015_00000001.jpg\), pair 0: verb 'ride' / object 'bicycle' do not match HOI id 0"):
        load_annotations(path)


# -- formats ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"hello world", b'{"images": []}', b"[1, 2, 3]", b"\x89HDF\r\n"])
def test_unknown_format_lists_the_accepted_ones(tmp_path, content):
    path = tmp_path / "annotations.mat"
    path.write_bytes(content)
    with pytest.raises(UnknownFormatError) as err:
        load_annotations(path)
    message = str(err.value)
    assert str(path) in message
    for accepted in ("anno_bbox.mat", "trainval_hico.json", "instances_train2015.json"):
        assert accepted in message


def test_matlab_file_without_hico_variables(tmp_path):
    from scipy.io import savemat

    path = tmp_path / "other.mat"
    savemat(path, {"something": np.eye(2)})
    with pytest.raises(UnknownFormatError, match="without list_action.*something"):
        load_annotations(path)


# -- images -----------------------------------------------------------------------------------------------
def test_grayscale_cmyk_palette_and_alpha_become_rgb(tmp_path):
    for mode in ("L", "CMYK", "P", "RGBA", "LA", "I;16"):
        path = tmp_path / f"{mode.replace(';', '')}.png"
        image = Image.new(mode, (10, 6))
        image.save(path.with_suffix(".tiff") if mode == "CMYK" else path)
        loaded = load_rgb(path.with_suffix(".tiff") if mode == "CMYK" else path)
        assert loaded.mode == "RGB" and loaded.size == (10, 6)


def test_missing_and_unreadable_images_are_skipped_and_counted(tmp_path, caplog):
    data = write_synthetic_hicodet(tmp_path / "syn", num_train=6, num_test=4)
    records = data.train_records
    (data.train_image_dir / records[1].file_name).unlink()
    present, missing = split_missing(records, data.train_image_dir)
    assert missing == [records[1].file_name] and len(present) == 5
    (data.train_image_dir / present[2].file_name).write_bytes(b"not a jpeg")  # unreadable
    Image.open(data.train_image_dir / present[3].file_name).convert("CMYK").save(
        data.train_image_dir / present[3].file_name, format="JPEG")  # CMYK is fine
    dataset = HICOSampleDataset(present, data.vocab, data.train_image_dir, 32)
    with caplog.at_level(logging.WARNING):
        samples = [dataset[i] for i in range(len(dataset))]
    assert dataset.unreadable == [present[2].file_name]
    assert samples[2]["scene"].id == samples[3]["scene"].id  # replaced by the next readable image
    assert "1 unreadable so far" in caplog.text
    assert all(s["pixel_values"].shape == (3, 32, 32) for s in samples)


def test_datamodule_summarises_missing_images(tmp_path, caplog):
    from interactdiffusion.data.datamodule import HICODataModule

    data = write_synthetic_hicodet(tmp_path / "syn", num_train=6, num_test=4)
    (data.train_image_dir / data.train_records[0].file_name).unlink()
    dm = HICODataModule(data.anno_bbox_mat, train_image_dir=data.train_image_dir, test_image_dir=data.test_image_dir,
                        resolution=32, num_workers=0, cache_dir=tmp_path / "cache")
    with caplog.at_level(logging.INFO):
        dm.setup("fit")
    assert len(dm.train_dataset) == 5
    assert dm.skipped["train_image_missing"] == 1 and dm.skipped["train_invisible_hoi"] >= 1
    assert "train_image_missing=1" in caplog.text


def test_latent_cache_leaves_out_unreadable_images(tmp_path, tiny_backbone):
    from interactdiffusion.data.datamodule import HICODataModule

    data = write_synthetic_hicodet(tmp_path / "syn", num_train=6, num_test=4)
    (data.train_image_dir / data.train_records[2].file_name).write_bytes(b"truncated")
    dm = HICODataModule(data.anno_bbox_mat, train_image_dir=data.train_image_dir, test_image_dir=data.test_image_dir,
                        resolution=32, num_workers=0, cache_dir=tmp_path / "cache", latent_cache=True,
                        vae=tiny_backbone.vae)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_dataset) == 5 and dm.skipped["train_image_unreadable"] == 1
    assert data.train_records[2].file_name not in {r.file_name for r in dm.train_dataset.records}
