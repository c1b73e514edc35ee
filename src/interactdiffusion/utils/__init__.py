"""Small helpers for the Hydra entry points: ranked logging, instantiation, the task wrapper."""

from .instantiators import instantiate_callbacks, instantiate_loggers
from .pylogger import RankedLogger
from .resolvers import register_resolvers
from .task import extras, get_metric_value, task_wrapper

__all__ = [
    "RankedLogger",
    "extras",
    "get_metric_value",
    "instantiate_callbacks",
    "instantiate_loggers",
    "register_resolvers",
    "task_wrapper",
]
