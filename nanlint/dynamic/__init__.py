"""The dynamic checker (`nanlint confirm`): the only part of nanlint that imports torch."""

from .guard import Guard, GuardError
from .monitor import Event, NonFiniteError, Recorder, watch
from .target import Target

__all__ = ["Event", "Guard", "GuardError", "NonFiniteError", "Recorder", "Target", "watch"]
