"""nanlint: find the numerical hazards that turn float16 PyTorch training into NaN/Inf.

Importing this package is cheap and never imports torch; only ``nanlint.dynamic``
(the ``nanlint confirm`` checker) does.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "Guard", "GuardError", "Target", "watch"]


def __getattr__(name):
    # The dynamic checker needs torch: import it only when asked for.
    if name in ("Target", "watch", "NonFiniteError", "Guard", "GuardError"):
        from . import dynamic

        return getattr(dynamic, name)
    raise AttributeError(f"module 'nanlint' has no attribute {name!r}")
