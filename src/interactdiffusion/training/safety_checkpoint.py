"""Checkpoints that do not wait for the step interval: on Ctrl-C / SIGTERM, and every N minutes.

The step interval (``model_checkpoint.every_n_train_steps``, 5,000 by default) can be hours apart
at SD scale; a preempted job without SLURM's requeue signal, or a Ctrl-C, would lose all of it. This
callback writes ``last.ckpt`` (the file ``ckpt_path=last`` resumes from) at the end of the batch
during which a signal arrived, then stops the run, and every ``every_minutes`` of training. Writes go
through :class:`~interactdiffusion.training.checkpointing.AtomicCheckpointIO`, so a kill during one
leaves the previous ``last.ckpt`` intact.

The decision is taken on every rank together (one all-reduce of a flag per batch), so DDP ranks
always save, or stop, at the same step.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import lightning as L
import torch

from ..utils.pylogger import RankedLogger
from .checkpointing import LAST

log = RankedLogger(__name__, rank_zero_only=True)

SIGNALS = ("SIGINT", "SIGTERM")


class SafetyCheckpoint(L.Callback):
    """Save ``<dirpath>/last.ckpt`` after a SIGINT/SIGTERM (then stop) and every ``every_minutes``.

    ``dirpath`` defaults to the run's ``ModelCheckpoint`` folder. ``every_minutes=null`` keeps only
    the signal saves. A second Ctrl-C during the save interrupts at once, as usual.
    """

    def __init__(self, dirpath: str | None = None, every_minutes: float | None = 30.0, on_signal: bool = True):
        if every_minutes is not None and every_minutes <= 0:
            raise ValueError(f"every_minutes must be positive or null, got {every_minutes}")
        self.dirpath = dirpath
        self.every_seconds = None if every_minutes is None else float(every_minutes) * 60.0
        self.on_signal = on_signal
        self.received: int | None = None  # the signal number that stopped the run
        self._last_save = time.monotonic()
        self._previous: dict[int, object] = {}

    # -- signals ------------------------------------------------------------------------------------
    def _handler(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        self.received = signum
        log.info(f"received {signal.Signals(signum).name}: saving a checkpoint at the end of this step, then stopping")
        previous = self._previous.get(signum)
        if callable(previous) and signum != signal.SIGINT:
            previous(signum, frame)  # Lightning's own SIGTERM handling (DDP launcher, requeue) still runs

    def on_train_start(self, trainer, pl_module) -> None:
        self._last_save = time.monotonic()
        if not self.on_signal:
            return
        import threading

        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for name in SIGNALS:
            signum = getattr(signal, name)
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handler)

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()

    # -- saving -------------------------------------------------------------------------------------
    def path(self, trainer) -> Path:
        if self.dirpath is not None:
            return Path(self.dirpath) / LAST
        callback = trainer.checkpoint_callback
        folder = getattr(callback, "dirpath", None) or Path(trainer.default_root_dir) / "checkpoints"
        return Path(folder) / LAST

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        due = self.every_seconds is not None and time.monotonic() - self._last_save >= self.every_seconds
        stop = self.received is not None
        if trainer.world_size > 1:
            # any rank's signal, rank 0's clock, one all-reduce: every rank decides alike at the same step
            # (one process needs neither the tensor nor the device sync that reading it back costs)
            flags = torch.tensor([float(stop), float(due and trainer.is_global_zero)], device=pl_module.device)
            stop, due = (trainer.strategy.reduce(flags, reduce_op="sum") > 0).tolist()
        if not (stop or due):
            return
        path = self.path(trainer)
        trainer.save_checkpoint(path)
        self._last_save = time.monotonic()
        if stop:
            log.info(f"saved {path} at step {trainer.global_step}; run the same command with ckpt_path=last to resume")
            trainer.should_stop = True
        else:
            log.info(f"saved {path} at step {trainer.global_step} ({self.every_seconds / 60:g} minutes since the last)")
