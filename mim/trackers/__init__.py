"""Experiment trackers: the contract (``Tracker``), the built-ins and the fan-out ``Trackers``.

A tracker is a class registered in ``mim.registry.TRACKERS`` (a plugin registers its own the
same way); ``tracker=`` picks one or a list. The built-ins import their library only when chosen.
"""
from mim.trackers.base import Tracker, Trackers
import mim.trackers.builtin  # noqa: F401  (registers tensorboard, mlflow, wandb)

__all__ = ["Tracker", "Trackers"]
