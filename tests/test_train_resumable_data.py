"""ResumableLoader: seeded order per epoch, rank shards, exact mid-epoch resume, per-sample augmentation seeds."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from interactdiffusion.training.resumable_data import (
    POSITION_KEY,
    ResumableLoader,
    make_train_loader_resumable,
)
from interactdiffusion.training.seeding import mix_seed, seeded_globals


class Numbers(Dataset):
    """Item i, plus a coin drawn from torch's global generator (like a random flip)."""

    def __len__(self):
        return 10

    def __getitem__(self, index):
        return {"index": index, "coin": float(torch.rand(()))}


def collate(items):
    return {"index": [i["index"] for i in items], "coin": [i["coin"] for i in items]}


def _loader(**kwargs) -> ResumableLoader:
    base = DataLoader(Numbers(), batch_size=3, shuffle=True, collate_fn=collate, drop_last=kwargs.pop("drop_last", False))
    return ResumableLoader(base, seed=7, **kwargs)


def _indices(batches):
    return [b["index"] for b in batches]


def test_order_depends_only_on_seed_and_epoch():
    a, b = _loader(), _loader()
    first = _indices(a)
    assert first == _indices(b)
    second = _indices(a)
    assert sorted(sum(second, [])) == list(range(10))
    assert second != first  # a new permutation per epoch
    assert len(a) == 4 and [len(x) for x in first] == [3, 3, 3, 1]


def test_augmentation_coins_are_seeded_per_sample_not_per_process():
    torch.manual_seed(0)
    a = [b["coin"] for b in _loader()]
    torch.manual_seed(123)  # the global stream must not matter
    b = [b["coin"] for b in _loader()]
    assert a == b
    with seeded_globals(mix_seed(7, "data", 0, 4)):
        expected = float(torch.rand(()))
    flat = {i: c for batch in _loader() for i, c in zip(batch["index"], batch["coin"])}
    assert flat[4] == expected


def test_resume_mid_epoch_continues_with_the_same_batches():
    full = _loader()
    epoch0, epoch1 = _indices(full), _indices(full)
    resumed = _loader()
    resumed.load_state_dict({"epoch": 0, "batches": 2, "seed": 7})
    assert _indices(resumed) == epoch0[2:]
    assert _indices(resumed) == epoch1  # then the next epoch, as without the interruption


def test_resume_at_the_end_of_an_epoch_starts_the_next():
    full = _loader()
    _indices(full)
    epoch1 = _indices(full)
    resumed = _loader()
    resumed.load_state_dict({"epoch": 0, "batches": 4, "seed": 7})
    assert _indices(resumed) == epoch1


def test_iter_without_next_does_not_start_an_epoch():
    loader = _loader()
    iter(loader)  # Lightning checks iterability this way
    fresh = _loader()
    assert _indices(loader) == _indices(fresh)


def test_state_dict_reports_what_the_consumer_trained_on_not_what_was_prefetched():
    loader = _loader()
    consumed = {}
    loader.position_provider = lambda: consumed["position"]
    iterator = iter(loader)
    batch = next(iterator)
    next(iterator)  # prefetched, not trained on
    consumed["position"] = batch[POSITION_KEY]
    assert loader.state_dict()["epoch"] == 0 and loader.state_dict()["batches"] == 1


def test_a_pass_cut_short_continues_the_epoch_unless_it_is_a_limit():
    full = _loader()
    epoch0 = _indices(full)
    loader = _loader()
    position = {}
    loader.position_provider = lambda: position["p"]
    first = next(iter(loader))
    position["p"] = first[POSITION_KEY]
    assert _indices(loader) == epoch0[1:]  # Lightning ended its epoch early: the data epoch goes on
    limited = _loader()
    limited.epoch_limit = 1
    limited.position_provider = lambda: position["q"]
    batch = next(iter(limited))
    position["q"] = batch[POSITION_KEY]
    second = next(iter(limited))
    assert second["index"] != batch["index"] and second[POSITION_KEY] == (1, 1)  # limit: next epoch's first


@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_get_disjoint_interleaved_shards(drop_last):
    shards = []
    for rank in range(2):
        with mock.patch("interactdiffusion.training.resumable_data._dist_info", return_value=(rank, 2)):
            loader = _loader(drop_last=drop_last)
            shards.append(loader.rank_indices(0))
            assert len(loader) == (1 if drop_last else 2)
    single = _loader().rank_indices(0)
    assert shards[0] == single[0::2] and shards[1] == single[1::2]
    assert not set(shards[0]) & set(shards[1])


def test_unwrappable_loaders_are_left_alone():
    class Module:
        def train_dataloader(self):
            return [1, 2, 3]

    module = make_train_loader_resumable(Module(), seed=0)
    with pytest.warns(UserWarning, match="not a map-style DataLoader"):
        assert module.train_dataloader() == [1, 2, 3]
