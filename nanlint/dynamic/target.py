"""What `nanlint confirm` runs: a factory returning the model and example inputs."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional


def describe(exc: BaseException) -> str:
    """``Type: first line`` of an exception, even when its ``__str__`` raises."""
    try:
        text = str(exc)
    except Exception:
        text = ""
    lines = [line for line in text.splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


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


def _on_path(directory: str) -> None:
    if directory not in sys.path:
        sys.path.insert(0, directory)


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise TargetError(f"no such file: {path}")
    # a file inside a package (folders with __init__.py) is imported as
    # package.module from the folder above the package: its relative imports work
    real = path.resolve()
    parts = [] if real.stem == "__init__" else [real.stem]
    root = real.parent
    while (root / "__init__.py").is_file():
        parts.insert(0, root.name)
        root = root.parent
    if real.parent != root and all(part.isidentifier() for part in parts):
        _on_path(str(root))
        return importlib.import_module(".".join(parts))
    name = "nanlint_target_" + str(abs(hash(str(path.resolve()))))
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TargetError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    _on_path(str(real.parent))  # sibling imports of the target file
    spec.loader.exec_module(module)
    return module


def load_factory(spec: str) -> Callable[[], Any]:
    """``path/to/file.py:factory`` or ``package.module:factory``."""
    if ":" not in spec:
        raise TargetError(f"target must be FILE.py:FACTORY or MODULE:FACTORY, got {spec!r}")
    where, _, attr = spec.rpartition(":")
    drive = len(os.path.splitdrive(where)[0])  # C:\models\gpt.py on Windows
    if not where or not attr.isidentifier() or ":" in where[drive:]:
        raise TargetError(f"target must be FILE.py:FACTORY or MODULE:FACTORY, got {spec!r}")
    try:
        if where.endswith(".py") or os.sep in where or "/" in where:
            module = _import_file(Path(where))
        else:
            # MODULE:FACTORY resolves from the current directory, as `python -m` does
            _on_path(os.getcwd())
            module = importlib.import_module(where)
    except TargetError:
        raise
    except Exception as exc:
        raise TargetError(f"importing {where} failed: {describe(exc)}") from exc
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
        raise TargetError(f"the factory raised {describe(exc)}") from exc
    target = normalise(result)
    target._allocations = allocations  # type: ignore[attr-defined]
    return target
