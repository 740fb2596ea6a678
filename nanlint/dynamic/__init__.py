"""The dynamic checker (`nanlint confirm`): the only part of nanlint that imports torch."""

from .monitor import Event, NonFiniteError, Recorder, watch
from .target import Target

__all__ = ["Event", "NonFiniteError", "Recorder", "Target", "watch"]
