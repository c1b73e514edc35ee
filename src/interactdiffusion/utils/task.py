"""What every entry point does around its task: optional extras first, clean shutdown always."""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .pylogger import RankedLogger

log = RankedLogger(__name__, rank_zero_only=True)


def task_wrapper(task: Callable[[DictConfig], tuple[dict[str, Any], dict[str, Any]]]):
    """Run ``task(cfg)``; on failure log the output folder, and always close loggers (wandb) cleanly.

    Closing matters in multiruns: a crashed job must not leave a wandb run open for the next one.
    """

    @functools.wraps(task)
    def wrapped(cfg: DictConfig):
        try:
            return task(cfg)
        except Exception as error:
            if isinstance(error, user_errors()):  # the message says what to fix; no traceback
                log.error(f"the task failed: {error}")
            else:
                log.exception("the task failed")
            raise
        finally:
            output_dir = OmegaConf.select(cfg, "paths.output_dir", default=None)
            if output_dir:
                log.info(f"output dir: {output_dir}")
            from ..dashboards.offline import finish_wandb_run

            finish_wandb_run()  # prints the `wandb sync` command of an offline run

    return wrapped


def user_errors() -> tuple[type[Exception], ...]:
    """Errors about the user's inputs (data, annotations): reported as one message, exit code 2."""
    from ..data.formats.common import AnnotationError
    from ..data.images import ImageLoadError

    return (ImageLoadError, AnnotationError)


def extras(cfg: DictConfig) -> None:
    """Optional utilities before the task starts (all switched in ``configs/extras/``)."""
    ex = cfg.get("extras")
    if not ex:
        return
    if ex.get("ignore_warnings"):
        log.info("ignoring python warnings (extras.ignore_warnings=true)")
        warnings.filterwarnings("ignore")
    if ex.get("enforce_tags") and not cfg.get("tags"):
        raise ValueError("set `tags=[...]` for this run (extras.enforce_tags=true)")
    if not ex.get("third_party_notices", False):
        quiet_third_party()
    save_to = OmegaConf.select(cfg, "paths.output_dir", default=None)
    print_config_tree(cfg, save_to=save_to, show=bool(ex.get("print_config")))


ADVERT_MARKERS = ("💡 Tip", "litlogger")


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(marker in message for marker in ADVERT_MARKERS)


def quiet_third_party() -> None:
    """Hide Lightning's product adverts and the deprecation notices of the libraries underneath
    (``extras.third_party_notices=true`` shows them): nothing a user of this project can act on."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropAdverts) for f in logger.filters):
            logger.addFilter(_DropAdverts())
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def print_config_tree(cfg: DictConfig, save_to: str | None = None, resolve: bool = False, show: bool = True) -> None:
    """Print the composed config as a rich tree (rank 0, when ``show``) and save it as ``config_tree.log``."""
    from lightning_utilities.core.rank_zero import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) not in (0, None):
        return
    import rich.syntax
    import rich.tree

    first = ["data", "backbone", "model", "recipe", "trainer", "callbacks", "logger", "paths"]
    order = [k for k in first if k in cfg] + [k for k in cfg if k not in first]
    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    for key in order:
        branch = tree.add(str(key), style="dim", guide_style="dim")
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=resolve) if isinstance(value, DictConfig) else str(value)
        branch.add(rich.syntax.Syntax(text, "yaml"))
    if show:
        rich.print(tree)
    if save_to and Path(save_to).is_dir():
        with open(Path(save_to) / "config_tree.log", "w") as handle:
            rich.print(tree, file=handle)


def get_metric_value(metric_dict: dict[str, Any], metric_name: str | None) -> float | None:
    """The value a hyper-parameter sweep optimises (``optimized_metric``), or None."""
    if not metric_name:
        return None
    if metric_name not in metric_dict:
        raise KeyError(
            f"metric {metric_name!r} was not logged; available: {sorted(metric_dict)} "
            "(check `optimized_metric` in the hparams_search config)"
        )
    value = metric_dict[metric_name]
    return float(value.item() if hasattr(value, "item") else value)
