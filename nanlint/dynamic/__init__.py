"""The dynamic checker (`nanlint confirm`): the only part of nanlint that imports torch.

Importing this package does not import torch yet (``nanlint.dynamic.worker``
silences torch's import-time warnings before it imports it); its names do.
"""

__all__ = ["Event", "Guard", "GuardError", "NonFiniteError", "Recorder", "Target", "watch"]


def __getattr__(name):
    if name == "Target":
        from .target import Target

        return Target
    if name in ("Guard", "GuardError"):
        from . import guard

        return getattr(guard, name)
    if name in ("Event", "NonFiniteError", "Recorder", "watch"):
        from . import monitor

        return getattr(monitor, name)
    raise AttributeError(f"module 'nanlint.dynamic' has no attribute {name!r}")
