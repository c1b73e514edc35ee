"""Parsed annotations and phrase embeddings are computed once and reused; stale caches are not."""

from __future__ import annotations

import os

import pytest
import torch

from interactdiffusion.data import annotations as annotations_module
from interactdiffusion.data.annotations import load_annotations
from interactdiffusion.data.phrase_cache import load_or_compute_phrase_table, phrase_cache_file
from interactdiffusion.data.synthetic import write_synthetic_hicodet


@pytest.fixture
def data(tmp_path):
    return write_synthetic_hicodet(tmp_path / "syn", num_train=12, num_test=4, write_images=False)


def _forbid_parsing(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("parsed again although a valid cache exists")

    monkeypatch.setattr(annotations_module, "read_anno_bbox_mat", fail)
    monkeypatch.setattr(annotations_module, "read_instances_json", fail)
    monkeypatch.setattr(annotations_module, "read_qpic_json", fail)


@pytest.mark.parametrize("which", ["anno_bbox_mat", "instances_train", "trainval_hico"])
def test_second_load_comes_from_the_cache(data, tmp_path, monkeypatch, which):
    path = getattr(data, which)
    first = load_annotations(path, "train", cache_dir=tmp_path / "cache")
    assert not first.from_cache
    _forbid_parsing(monkeypatch)
    second = load_annotations(path, "train", cache_dir=tmp_path / "cache")
    assert second.from_cache
    assert second.records == first.records
    assert second.vocab.to_dict() == first.vocab.to_dict()
    assert second.skipped == first.skipped and second.split == "train"


def test_mat_parse_caches_both_splits(data, tmp_path, monkeypatch):
    load_annotations(data.anno_bbox_mat, "train", cache_dir=tmp_path / "cache")
    _forbid_parsing(monkeypatch)
    assert load_annotations(data.anno_bbox_mat, "test", cache_dir=tmp_path / "cache").records == data.test_records


def test_changed_file_or_format_version_invalidates(data, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    load_annotations(data.instances_train, cache_dir=cache)
    stat = data.instances_train.stat()
    os.utime(data.instances_train, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert not load_annotations(data.instances_train, cache_dir=cache).from_cache
    assert load_annotations(data.instances_train, cache_dir=cache).from_cache
    monkeypatch.setattr(annotations_module, "FORMAT_VERSION", annotations_module.FORMAT_VERSION + 1)
    assert not load_annotations(data.instances_train, cache_dir=cache).from_cache


def test_corrupt_cache_is_ignored(data, tmp_path):
    cache = tmp_path / "cache"
    load_annotations(data.trainval_hico, cache_dir=cache)
    for file in cache.glob("*.npz"):
        file.write_bytes(b"garbage")
    again = load_annotations(data.trainval_hico, cache_dir=cache)
    assert not again.from_cache and again.records == data.train_records


def test_cache_disabled(data, tmp_path):
    load_annotations(data.instances_train, cache_dir=False)
    assert not load_annotations(data.instances_train, cache_dir=False).from_cache


class CountingEncoder:
    """A stand-in phrase encoder that counts the phrases it is asked to encode."""

    def __init__(self, text_encoder):
        self.text_encoder = text_encoder
        self.encoded: list[str] = []

    def __call__(self, phrases):
        self.encoded += list(phrases)
        return torch.stack([torch.full((4,), float(len(p))) for p in phrases])


def test_phrase_table_encodes_each_phrase_once(tmp_path, tiny_backbone):
    encoder = CountingEncoder(tiny_backbone.text_encoder)
    table = load_or_compute_phrase_table(["person", "riding", "horse"], encoder, tmp_path)
    assert table.shape == (3, 4) and encoder.encoded == ["person", "riding", "horse"]
    again = CountingEncoder(tiny_backbone.text_encoder)
    grown = load_or_compute_phrase_table(["horse", "person", "kite"], again, tmp_path)
    assert again.encoded == ["kite"]  # only the new phrase
    assert torch.equal(grown[0], table[2]) and torch.equal(grown[1], table[0])
    third = CountingEncoder(tiny_backbone.text_encoder)
    load_or_compute_phrase_table(["kite", "riding"], third, tmp_path)
    assert third.encoded == []


def test_phrase_cache_is_keyed_by_the_encoder(tmp_path, tiny_backbone):
    from interactdiffusion.models.backbone import PhraseEncoder, build_tiny_backbone, module_fingerprint

    encoder = PhraseEncoder(tiny_backbone.text_encoder, tiny_backbone.tokenizer)
    table = load_or_compute_phrase_table(["person", "riding"], encoder, tmp_path)
    torch.testing.assert_close(table, encoder(["person", "riding"]))
    assert phrase_cache_file(tmp_path, module_fingerprint(tiny_backbone.text_encoder)).is_file()
    other = build_tiny_backbone(seed=1)
    other_table = load_or_compute_phrase_table(["person", "riding"], PhraseEncoder(other.text_encoder, other.tokenizer), tmp_path)
    assert not torch.allclose(table, other_table)
    assert len(list(tmp_path.glob("phrases-*.safetensors"))) == 2
