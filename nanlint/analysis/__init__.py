"""The shared analysis: what the values of a file are (dtype class, range,
origin, gradient, consumers), computed lazily for the expressions rules ask
about. Data flows one way: files -> parse -> analysis -> rules -> findings.

- ``scopes``: bindings, scopes, parents and source order of one module;
- ``values``: :class:`Facts`, the queries rules make;
- ``masks``: which rows a mask fill can blank, and where a filled tensor goes.
- ``project``: what other modules of the checked project define (constants,
  config defaults, function summaries), read with ``ast`` and cached by
  content hash; ``Facts.constant`` and ``Facts.summary_of_call`` ask it.
"""


__all__ = ["Facts", "ORDINARY", "HALF_ONLY", "EDGE", "WEIGHT", "HALF", "BF16", "WIDE", "INTEGER", "HOST", "UNKNOWN", "ACTIVATION"]


def __getattr__(name: str):
    # ``values`` (and libcst with it) is imported on first use: a run answered
    # from the cache reads ``project``'s imports but never analyses a file
    if name in __all__:
        from . import values

        return getattr(values, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
