"""One phrase-cache format: training's cache and ``interactdiffusion-generate phrase_cache=`` read each
other's files, and the official ``clip_phrases_feature_cache.pth`` layout ({phrase: [1, 768]}) is read too."""

from __future__ import annotations

import torch
from test_generate_cli import FAST, generate, interaction, one_thread, write  # noqa: F401 (fixture)

from interactdiffusion.data.phrase_cache import (
    PhraseCacheError,
    load_or_compute_phrase_table,
    phrase_cache_file,
    read_phrase_table,
    write_phrase_table,
)


class NoEncoding:
    """A phrase encoder that must not be needed: every phrase is expected on disk."""

    text_encoder = None

    def __call__(self, phrases):
        raise AssertionError(f"encoded {phrases} although the cache holds them")


def test_generate_and_training_read_each_others_cache(tmp_path):
    src = write(tmp_path / "scenes.json", [{"id": "a", "interactions": [interaction()]}])
    folder = tmp_path / "phrases"
    # 1. generate fills a cache folder, naming the file exactly as training does
    assert generate(*FAST, f"input={src}", f"output_dir={tmp_path / 'out1'}", f"phrase_cache={folder}") == 0
    (file,) = folder.glob("phrases-*.safetensors")
    fingerprint = file.name[len("phrases-"):-len(".safetensors")]
    assert file == phrase_cache_file(folder, fingerprint)
    table = load_or_compute_phrase_table(["person", "riding", "horse"], NoEncoding(), folder, fingerprint)
    assert table.shape[0] == 3

    # 2. training writes its cache (sentinel vectors); generate reads it, adds one phrase, keeps the rest
    dim = table.shape[1]
    trained = tmp_path / "train-cache"
    sentinel = {p: torch.full((dim,), 7.0) for p in ("person", "riding", "horse")}
    write_phrase_table(phrase_cache_file(trained, fingerprint), sentinel, fingerprint)
    scenes = [{"id": "b", "interactions": [interaction(), interaction(action="feeding")]}]
    write(src, scenes)
    training_file = phrase_cache_file(trained, fingerprint)
    assert generate(*FAST, f"input={src}", f"output_dir={tmp_path / 'out2'}", f"phrase_cache={training_file}") == 0
    merged = read_phrase_table(training_file, fingerprint)
    assert set(merged) == {"person", "riding", "horse", "feeding"}
    assert all(torch.equal(merged[p], sentinel[p]) for p in sentinel)  # read, not re-encoded
    again = load_or_compute_phrase_table(["feeding", "horse"], NoEncoding(), trained, fingerprint)
    assert torch.equal(again[1], sentinel["horse"])


def test_official_layout_and_foreign_encoder(tmp_path):
    official = tmp_path / "clip_phrases_feature_cache.pth"
    torch.save({"with": torch.ones(1, 8), "riding": torch.zeros(1, 8)}, official)
    table = read_phrase_table(official)
    assert set(table) == {"with", "riding"} and table["with"].shape == (8,)
    ours = tmp_path / "mine.safetensors"
    write_phrase_table(ours, table, "encoder-a")
    assert set(read_phrase_table(ours, "encoder-a")) == {"with", "riding"}
    assert read_phrase_table(ours, "encoder-b") == {}  # another text encoder's vectors are not used
    bad = tmp_path / "bad.pth"
    torch.save([1, 2, 3], bad)
    try:
        read_phrase_table(bad)
    except PhraseCacheError as err:
        assert "bad.pth" in str(err)
    else:
        raise AssertionError("a list was accepted as a phrase cache")
