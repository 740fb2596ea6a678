"""What `nanlint confirm` runs: a factory returning the model and example inputs."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional


class TargetError(Exception):
    """The target cannot be loaded or its factory misbehaved (exit code 2)."""


@dataclass
class Target:
    """What a factory returns to ``nanlint confirm``.

    - ``model``: a ``torch.nn.Module`` (or any callable taking ``inputs``);
    - ``inputs``: one tensor, a tuple/list of positional arguments, or a dict of
      keyword arguments;
    - ``loss_fn``: optional ``loss_fn(output, inputs) -> scalar tensor``; with it
      the backward pass is checked too;
    - ``optimizer``: optional factory ``optimizer(parameters) -> Optimizer``;
      with it (and ``loss_fn``) ``--steps`` training steps are run;
    - ``train_step``: optional ``train_step(model, inputs, optimizer) -> loss``,
      your own step (backward, clipping, ``optimizer.step()``), run instead of
      nanlint's so that findings in it are linked to what happens.

    A plain ``(model, inputs)`` tuple works as well.
    """

    model: Any
    inputs: Any
    loss_fn: Optional[Callable[..., Any]] = None
    optimizer: Optional[Callable[..., Any]] = None
    train_step: Optional[Callable[..., Any]] = None


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise TargetError(f"no such file: {path}")
    name = "nanlint_target_" + str(abs(hash(str(path.resolve()))))
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TargetError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    directory = str(path.resolve().parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)  # sibling imports of the target file
    spec.loader.exec_module(module)
    return module


def load_factory(spec: str) -> Callable[[], Any]:
    """``path/to/file.py:factory`` or ``package.module:factory``."""
    if ":" not in spec:
        raise TargetError(f"target must be FILE.py:FACTORY or MODULE:FACTORY, got {spec!r}")
    where, _, attr = spec.rpartition(":")
    if not where or not attr.isidentifier():
        raise TargetError(f"target must be FILE.py:FACTORY or MODULE:FACTORY, got {spec!r}")
    try:
        if where.endswith(".py") or os.sep in where or "/" in where:
            module = _import_file(Path(where))
        else:
            module = importlib.import_module(where)
    except TargetError:
        raise
    except Exception as exc:
        raise TargetError(f"importing {where} failed: {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, attr, None)
    if factory is None:
        raise TargetError(f"{where} has no attribute {attr!r}")
    if not callable(factory):
        raise TargetError(f"{where}:{attr} is not callable")
    return factory


def normalise(result: Any) -> Target:
    if isinstance(result, Target):
        target = result
    elif isinstance(result, (tuple, list)) and len(result) == 2:
        target = Target(model=result[0], inputs=result[1])
    else:
        raise TargetError(
            "the factory must return nanlint.Target(model=..., inputs=...) or a (model, inputs) "
            f"tuple, not {type(result).__name__}"
        )
    if not callable(target.model):
        raise TargetError(f"the model is not callable ({type(target.model).__name__})")
    return target


def load_target(spec: str) -> Target:
    """Call the factory with uninitialised memory filled with NaN (deterministic
    mode, restored afterwards) and the lines of uninitialised allocations
    recorded, for the ``uninitialized`` event."""
    from .monitor import building

    factory = load_factory(spec)
    try:
        with building() as allocations:
            result = factory()
    except Exception as exc:
        raise TargetError(f"the factory raised {type(exc).__name__}: {exc}") from exc
    target = normalise(result)
    target._allocations = allocations  # type: ignore[attr-defined]
    return target
