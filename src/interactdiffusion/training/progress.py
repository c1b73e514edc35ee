"""The training progress bar: one bar over the whole run, counted in optimiser steps.

Lightning's bar counts batches of the current epoch and titles it ``Epoch e/max_epochs-1``; a run
bounded by ``max_steps`` (``max_epochs=-1``) reads ``Epoch 6/-2``, and a run resumed mid-epoch shows
more batches than the bar's total (``6/4``). Here the bar's total is ``max_steps`` and its position
``global_step``, so it reads ``step 30/60`` from the first step to the last, resumed or not.
"""

from __future__ import annotations

from typing import Any

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import RichProgressBar


class StepProgressBar(RichProgressBar):
    """A ``RichProgressBar`` whose training bar spans the run in optimiser steps when ``max_steps`` is set."""

    def _run_steps(self) -> int | None:
        steps = self.trainer.max_steps
        return int(steps) if steps is not None and steps > 0 else None

    @property
    def total_train_batches(self) -> int | float:
        steps = self._run_steps()
        return steps if steps is not None else super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:
        if self._run_steps() is not None:
            return f"step (epoch {current_epoch})"
        description = f"Epoch {current_epoch}"
        max_epochs = self.trainer.max_epochs
        if max_epochs is not None and max_epochs > 0:
            description += f"/{max_epochs - 1}"
        return description

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._run_steps() is not None and self.train_progress_bar_id is not None and self.progress is not None:
            # one bar for the run: a new epoch only renames it
            self.progress.update(self.train_progress_bar_id, description=self._get_train_description(trainer.current_epoch))
            self.refresh()
            return
        super().on_train_epoch_start(trainer, pl_module)
        if self._run_steps() is not None:
            self._update(self.train_progress_bar_id, trainer.global_step)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._run_steps() is None:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        if not self.is_disabled and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()  # a run resumed mid-epoch
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()

    def bar_state(self) -> tuple[str, float, float] | None:
        """(description, completed, total) of the training bar, for tests and logs."""
        if self.progress is None or self.train_progress_bar_id is None:
            return None
        task = next(t for t in self.progress.tasks if t.id == self.train_progress_bar_id)
        return str(task.description), float(task.completed), float(task.total)
