"""Samples, collate (padding and masks) and the LightningDataModule on the synthetic data set."""

from __future__ import annotations

import pytest
import torch

from interactdiffusion.conditioning import PAD_ID, PhraseIndex
from interactdiffusion.data.collate import Collate
from interactdiffusion.data.datamodule import HICODataModule
from interactdiffusion.data.synthetic import synthetic_vocabulary
from interactdiffusion.scene import Interaction, Scene


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


def make_datamodule(root, cache, **overrides):
    options = dict(
        train_annotations=root / "anno_bbox.mat",
        train_image_dir=root / "images" / "train2015",
        test_image_dir=root / "images" / "test2015",
        resolution=32,
        batch_size=4,
        num_workers=0,
        num_val_images=4,
        cache_dir=cache,
        synthetic={"root": str(root), "num_train": 16, "num_test": 6, "seed": 0},
    )
    options.update(overrides)
    return HICODataModule(**options)


def test_collate_pads_to_30_with_masks():
    vocab = synthetic_vocabulary()
    index = PhraseIndex(vocab.phrases())
    box = (0.1, 0.1, 0.5, 0.5)
    scenes = [
        Scene("a", (Interaction("person", "riding", "horse", box, box), Interaction("person", "holding", "bicycle", box, box))),
        Scene("b", (), prompt="a person is hugging a person"),
    ]
    samples = [{"scene": s, "pixel_values": torch.zeros(3, 8, 8)} for s in scenes]
    batch = Collate(index)(samples)
    g = batch["grounding"]
    assert g.subject_boxes.shape == (2, 30, 4) and g.masks.shape == (2, 30)
    assert g.masks[0].tolist() == [1.0, 1.0] + [0.0] * 28 and g.masks[1].sum() == 0
    assert g.subject_ids[0, :2].tolist() == [index.id("person")] * 2
    assert g.action_ids[0, :2].tolist() == [index.id("riding"), index.id("holding")]
    assert g.object_ids[0, :2].tolist() == [index.id("horse"), index.id("bicycle")]
    assert (g.action_ids[0, 2:] == PAD_ID).all() and (g.subject_boxes[0, 2:] == 0).all()
    assert batch["has_interaction"].tolist() == [True, False]
    assert batch["captions"] == ["a person is riding a horse, a person is holding a bicycle", "a person is hugging a person"]
    assert batch["scene_ids"] == ["a", "b"] and batch["pixel_values"].shape == (2, 3, 8, 8)
    assert "latent_mean" not in batch
    with pytest.raises(KeyError):  # phrases outside the index are a bug, not silently added in a worker
        Collate(index)([{"scene": Scene("c", (Interaction("person", "juggling", "horse", box, box),)),
                         "pixel_values": torch.zeros(3, 8, 8)}])


def test_datamodule_batches(synthetic_root, tmp_path):
    dm = make_datamodule(synthetic_root, tmp_path / "cache")
    dm.prepare_data()
    dm.setup("fit")
    assert dm.phrase_index.phrases == dm.vocab.phrases()
    assert len(dm.train_dataset) == 16 and len(dm.val_dataset) == 4
    assert len(dm.test_dataset) == 5  # the test split's images with a visible pair
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"pixel_values", "captions", "grounding", "has_interaction", "scene_ids", "time_ids"}
    assert batch["time_ids"].shape == (len(batch["captions"]), 6)
    assert batch["pixel_values"].shape == (4, 3, 32, 32)
    assert batch["pixel_values"].min() >= -1 and batch["pixel_values"].max() <= 1
    assert batch["has_interaction"].dtype == torch.bool
    val = next(iter(dm.val_dataloader()))
    assert val["scene_ids"] == [s.id for s, _ in dm.val_scenes(4)]
    first, again = dm.val_scenes(2), dm.val_scenes(2)
    assert [s for s, _ in first] == [s for s, _ in again]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(first, again))


def test_same_seed_same_batches(synthetic_root, tmp_path):
    def batches():
        dm = make_datamodule(synthetic_root, tmp_path / "cache")
        dm.setup("fit")
        torch.manual_seed(7)
        return list(dm.train_dataloader())

    a, b = batches(), batches()
    assert [x["scene_ids"] for x in a] == [x["scene_ids"] for x in b]
    assert all(torch.equal(x["pixel_values"], y["pixel_values"]) for x, y in zip(a, b))
    val_scenes = make_datamodule(synthetic_root, tmp_path / "cache").val_scenes(4)
    assert not any(scene.extra["flip"] for scene, _ in val_scenes)  # validation never flips


def test_latent_cache_gives_the_same_batches(synthetic_root, tmp_path, tiny_backbone):
    vae = tiny_backbone.vae
    from_images = make_datamodule(synthetic_root, tmp_path / "cache")
    from_latents = make_datamodule(synthetic_root, tmp_path / "cache", latent_cache=True, vae=vae, latent_dtype="float32")
    for dm in (from_images, from_latents):
        dm.prepare_data()
        dm.setup("fit")
    torch.manual_seed(3)
    image_batches = list(from_images.train_dataloader())
    torch.manual_seed(3)
    latent_batches = list(from_latents.train_dataloader())
    assert len(image_batches) == len(latent_batches) == 4
    flips = set()
    for image_batch, latent_batch in zip(image_batches, latent_batches):
        assert "pixel_values" not in latent_batch and latent_batch["latent_mean"].shape == (4, 4, 16, 16)
        assert image_batch["scene_ids"] == latent_batch["scene_ids"]
        assert image_batch["captions"] == latent_batch["captions"]
        for key, value in image_batch["grounding"].as_dict().items():
            assert torch.equal(value, latent_batch["grounding"].as_dict()[key]), key
        with torch.no_grad():
            posterior = vae.encode(image_batch["pixel_values"]).latent_dist
        torch.testing.assert_close(latent_batch["latent_mean"], posterior.mean, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(latent_batch["latent_std"], posterior.std, atol=1e-4, rtol=1e-4)
        flips.update(sample_flip for sample_flip in _flips(from_images, image_batch))
    assert flips == {False, True}  # both halves of the cache were exercised


def _flips(dm, batch):
    # the flip of a sample shows in its boxes: compare with the unflipped scene of the same record
    out = []
    names = {r.file_name.rsplit(".", 1)[0]: k for k, r in enumerate(dm.train_dataset.records)}
    for k, scene_id in enumerate(batch["scene_ids"]):
        plain = dm.train_dataset.scene(names[scene_id], flip=False)
        if not plain.interactions:
            continue
        first = batch["grounding"].subject_boxes[k, 0].tolist()
        out.append(first != pytest.approx(list(plain.interactions[0].subject_box), abs=1e-6))
    return out


def test_latent_cache_is_reused_not_rebuilt(synthetic_root, tmp_path, tiny_backbone, monkeypatch):
    dm = make_datamodule(synthetic_root, tmp_path / "cache", latent_cache=True, vae=tiny_backbone.vae)
    dm.prepare_data()
    calls = []
    original = tiny_backbone.vae.encode
    monkeypatch.setattr(tiny_backbone.vae, "encode", lambda *a, **k: calls.append(1) or original(*a, **k))
    make_datamodule(synthetic_root, tmp_path / "cache", latent_cache=True, vae=tiny_backbone.vae).prepare_data()
    assert calls == []


def test_latent_cache_needs_a_vae(synthetic_root, tmp_path):
    dm = make_datamodule(synthetic_root, tmp_path / "cache", latent_cache=True)
    with pytest.raises(RuntimeError, match="needs a VAE"):
        dm.prepare_data()
