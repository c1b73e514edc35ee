"""Training batches that resume mid-epoch exactly and shard over processes without a DistributedSampler.

Lightning re-creates the training iterator when a run resumes and, for an ordinary DataLoader,
restarts the epoch (or continues with a freshly shuffled order): the batches after a resume differ
from those of an uninterrupted run. ``ResumableLoader`` makes the order a function of (seed, epoch)
alone, shards it by rank, skips the batches already trained on, and seeds every sample's
augmentation by (seed, epoch, index), so worker count, prefetching and restarts change nothing.

It implements Lightning's ``state_dict``/``load_state_dict`` loader protocol. The position it saves
is that of the last batch the *training step* consumed: every batch carries its position
(``batch["data_position"]``) and the LightningModule reports the last one it trained on. Counting
what the iterator produced would be wrong, because Lightning prefetches.

Why not torchdata's ``StatefulDataLoader`` (which Lightning also checkpoints): its state is the count of
batches its iterator has *yielded*, and Lightning reads one batch ahead (to know which batch is the last),
so the saved position can be a batch past the last training step, whereas here the position comes from
the batch the step consumed; and it restores a sampler's generator state, while the order and every
sample's augmentation here are functions of (seed, epoch, index) alone, independent of worker count and of
how many processes there are. It would also be a new dependency (torchdata is not installed).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, IterableDataset, RandomSampler, Sampler

from .seeding import generator, mix_seed, seeded_globals

Position = tuple[int, int]  # (epoch, batches consumed in that epoch)
POSITION_KEY = "data_position"


class _SeededDataset(Dataset):
    """Fetches ``dataset[index]`` for keys ``(epoch, index)`` with the global RNGs seeded per sample."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        with seeded_globals(mix_seed(self.seed, "data", epoch, index)):
            return self.dataset[index]


class _PlannedKeys(Sampler):
    """The keys planned for the current pass (set when a pass of ``ResumableLoader`` starts)."""

    def __init__(self):
        self.keys: list[tuple[int, int]] = []

    def __iter__(self):
        return iter(list(self.keys))

    def __len__(self) -> int:
        return len(self.keys)


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ResumableLoader:
    """Wraps a map-style ``DataLoader``: same dataset, batch size, collate function and workers."""

    def __init__(
        self,
        loader: DataLoader,
        seed: int,
        shuffle: bool | None = None,
        position_provider: Callable[[], Position] | None = None,
    ):
        if not can_wrap(loader):
            raise TypeError("ResumableLoader needs a DataLoader over a map-style dataset with a batch_size")
        self.dataset = loader.dataset
        self.batch_size = int(loader.batch_size)
        self.drop_last = bool(loader.drop_last)
        self.shuffle = isinstance(loader.sampler, RandomSampler) if shuffle is None else bool(shuffle)
        self.seed = int(seed)
        self.position_provider = position_provider
        self.epoch_limit: int | None = None
        self.epoch = -1  # the pass in progress; the first pass is epoch 0
        self._resume_at: Position | None = None
        self._keys = _PlannedKeys()
        workers = loader.num_workers
        self._loader = DataLoader(
            _SeededDataset(loader.dataset, self.seed),
            batch_size=self.batch_size,
            sampler=self._keys,
            collate_fn=loader.collate_fn,
            num_workers=workers,
            pin_memory=loader.pin_memory,
            drop_last=self.drop_last,
            timeout=loader.timeout,
            worker_init_fn=loader.worker_init_fn,
            multiprocessing_context=loader.multiprocessing_context if workers > 0 else None,
            persistent_workers=loader.persistent_workers if workers > 0 else False,
            prefetch_factor=loader.prefetch_factor if workers > 0 else None,
        )

    # -- the order --------------------------------------------------------------------------------
    def rank_indices(self, epoch: int) -> list[int]:
        """This rank's dataset indices for ``epoch`` (a seeded permutation, interleaved over ranks)."""
        n = len(self.dataset)
        if self.shuffle:
            order = torch.randperm(n, generator=generator(mix_seed(self.seed, "order", epoch))).tolist()
        else:
            order = list(range(n))
        rank, world = _dist_info()
        if world > 1:
            if self.drop_last:
                order = order[: (n // world) * world]
            else:
                total = math.ceil(n / world) * world
                order = (order * math.ceil(total / max(n, 1)))[:total]  # pad like DistributedSampler
            order = order[rank::world]
        return order

    def _rank_count(self) -> int:
        n = len(self.dataset)
        _, world = _dist_info()
        if world == 1:
            return n
        return n // world if self.drop_last else math.ceil(n / world)

    def __len__(self) -> int:
        n = self._rank_count()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        """One pass = one epoch; a resumed run's first pass continues the saved epoch where it stopped.

        The epoch is counted here, not taken from Lightning, whose epoch count after a resume can
        differ from the uninterrupted run's (see ``_start``). The pass begins at the first ``next()``, since Lightning calls ``iter()`` once only to check
        that the loader is iterable.
        """
        return self._pass()

    def _start(self) -> Position:
        """Where the next pass begins: the resume point, the rest of an epoch Lightning cut short, or
        the next epoch.

        Lightning's epoch count after resuming from a checkpoint written at an epoch's end can be off,
        so that it ends its epoch before the data does; the data epoch then continues from the last
        batch the training step consumed. ``epoch_limit`` (set from ``trainer.num_training_batches``
        when training starts) keeps ``limit_train_batches``/``overfit_batches`` meaning "the first N
        batches of every epoch".
        """
        if self._resume_at is not None:
            start, self._resume_at = self._resume_at, None
            return start
        if self.epoch >= 0 and self.position_provider is not None:
            epoch, consumed = self.position_provider()
            if epoch == self.epoch and consumed < self.batches_per_epoch():
                return epoch, consumed
        return self.epoch + 1, 0

    def batches_per_epoch(self) -> int:
        """Batches of one epoch: all of them, or Lightning's ``limit_train_batches``/``overfit_batches``."""
        return min(len(self), self.epoch_limit) if self.epoch_limit else len(self)

    def _pass(self):
        epoch, skip = self._start()
        self.epoch = epoch
        indices = self.rank_indices(epoch)[skip * self.batch_size :]
        self._keys.keys = [(epoch, i) for i in indices]
        for k, batch in enumerate(self._loader, start=skip + 1):
            if isinstance(batch, dict):
                batch[POSITION_KEY] = (epoch, k)  # batches consumed in this epoch once this one is trained
            yield batch

    # -- resuming -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        epoch, batches = self.position_provider() if self.position_provider else (max(self.epoch, 0), 0)
        return {"epoch": int(epoch), "batches": int(batches), "seed": self.seed, "shuffle": self.shuffle}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if state.get("seed", self.seed) != self.seed:
            warnings.warn(
                f"resuming with data seed {self.seed} but the checkpoint used {state['seed']}: "
                "the data order after the resume differs from the original run",
                stacklevel=2,
            )
        if batches >= len(self):
            epoch, batches = epoch + 1, 0
        self._resume_at = (epoch, batches)


def can_wrap(loader: Any) -> bool:
    return (
        isinstance(loader, DataLoader)
        and not isinstance(loader.dataset, IterableDataset)
        and loader.batch_size is not None
        and type(loader.batch_sampler) is BatchSampler
    )


def make_train_loader_resumable(datamodule: Any, seed: int, shuffle: bool | None = None) -> Any:
    """Make ``datamodule.train_dataloader()`` return a ``ResumableLoader`` (in place; returns it).

    The LightningModule connects itself as the position provider when training starts. Loaders that
    cannot be wrapped (iterable datasets, custom batch samplers) are returned unchanged with a warning.
    """
    original = datamodule.train_dataloader

    @functools.wraps(original)
    def train_dataloader():
        loader = original()
        if not can_wrap(loader):
            warnings.warn(
                "the training loader is not a map-style DataLoader with a batch size; "
                "a resumed run will not see exactly the same batches",
                stacklevel=2,
            )
            return loader
        return ResumableLoader(loader, seed=seed, shuffle=shuffle)

    datamodule.train_dataloader = train_dataloader
    return datamodule
