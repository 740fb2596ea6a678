"""nanlint: find the numerical hazards that turn float16 PyTorch training into NaN/Inf.

Importing this package is cheap and never imports torch; only ``nanlint.dynamic``
(the ``nanlint confirm`` checker) does.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
