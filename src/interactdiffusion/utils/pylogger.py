"""A logger that knows the process rank, so multi-GPU runs do not print every line N times."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from lightning_utilities.core.rank_zero import rank_prefixed_message, rank_zero_only


class RankedLogger(logging.LoggerAdapter):
    """``log.info(...)`` on rank 0 only (``rank_zero_only=True``), or on every rank with a rank prefix.

    ``rank=`` on a call restricts that one message to the given rank.
    """

    def __init__(self, name: str = __name__, rank_zero_only: bool = False, extra: Mapping | None = None):
        super().__init__(logger=logging.getLogger(name), extra=extra)
        self.rank_zero_only = rank_zero_only

    def log(self, level: int, msg: str, *args, rank: int | None = None, **kwargs) -> None:
        if not self.isEnabledFor(level):
            return
        msg, kwargs = self.process(msg, kwargs)
        current_rank = getattr(rank_zero_only, "rank", None)
        if current_rank is None:
            current_rank = 0  # not set before the trainer starts: a single process so far
        msg = rank_prefixed_message(msg, current_rank)
        if self.rank_zero_only:
            if current_rank == 0:
                self.logger.log(level, msg, *args, **kwargs)
        elif rank is None or current_rank == rank:
            self.logger.log(level, msg, *args, **kwargs)
