"""``nanlint.Guard``: watch a real training run at the cost of two finiteness
checks per step, and explain its first non-finite step.

Per step the guard keeps a reference to the batch and a snapshot of the RNG
states, checks that the loss is finite, and checks the total gradient norm
just before the optimizer step (the norm ``guard.clip_grad_norm_`` computed
is reused). When the step is bad, the optimizer step is not applied (the
weights are still the pre-step ones), the state is written to a repro bundle,
the step is replayed under the full monitor (same batch, same RNG), the
origin is reported, and ``GuardError`` stops the run.

A step a ``GradScaler`` skips for overflowing scaled gradients is normal; the
guard trips on it only when the loss itself is NaN, or when ``patience``
steps in a row are skipped (the scale is not recovering).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch

from .replay import (GuardReport, bare_module, replay_step, rng_state, run_callable, user_files, write_bundle,
                     write_report)


class GuardError(FloatingPointError):
    """The guarded run went non-finite; ``report`` says where it started."""

    def __init__(self, report: GuardReport) -> None:
        super().__init__(report.render())
        self.report = report


def total_norm(parameters: Any) -> float:
    """The total L2 norm of the gradients, summed in float32 (a float16
    norm of finite gradients may overflow; only non-finite gradients must
    give a non-finite norm here)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    with torch._C.DisableTorchFunction():
        norms = torch._foreach_norm(grads, 2, dtype=torch.float32)
        return float(torch.linalg.vector_norm(torch.stack(norms)))


def _loss_tensor(value: Any) -> Optional[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, dict) or hasattr(value, "keys"):
        loss = value.get("loss") if hasattr(value, "get") else None
        return loss if isinstance(loss, torch.Tensor) else None
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


def _finite(value: Optional[torch.Tensor]) -> bool:
    if value is None:
        return True
    with torch._C.DisableTorchFunction():
        return bool(torch.isfinite(value.detach().float().sum()))


class Guard:
    """Guard a training run.

    Plain loop::

        guard = nanlint.Guard(model, optimizer)          # scaler=... with AMP

        def train_step(batch):                           # at module level: the
            loss = loss_fn(model(batch["x"]), batch["y"])  # bundle replays it
            loss.backward()
            guard.clip_grad_norm_(1.0)                   # optional; its norm is reused
            optimizer.step()
            optimizer.zero_grad()
            return loss

        for batch in loader:
            guard.step(train_step, batch)

    Lightning and Hugging Face ``Trainer``: ``nanlint.integrations``.
    """

    def __init__(self, model: Any, optimizer: Any = None, *, scaler: Any = None,
                 bundle_dir: str = "nanlint-guard", patience: int = 3, echo: bool = True,
                 wrap_optimizer: bool = True) -> None:
        if patience < 1:
            raise ValueError("patience must be at least 1")
        self.model = model
        self.optimizer = optimizer
        self.scaler = scaler
        self.bundle_dir = bundle_dir
        self.patience = patience
        self.echo = echo
        self.step_count = 0
        self.skipped = 0  # GradScaler skips in a row
        self.report: Optional[GuardReport] = None
        self._batch: Any = None
        self._rng: Optional[Dict[str, Any]] = None
        self._norm: Optional[float] = None
        self._bad_grad = False
        self._stepped = False
        self._replaying = False
        self._loss_finite = True
        self._original_step = None
        if optimizer is not None and wrap_optimizer:
            self._original_step = optimizer.step
            optimizer.step = self._optimizer_step

    # -- the cheap part: every step -------------------------------------------
    def begin(self, batch: Any) -> None:
        """A step starts: remember its batch (a reference) and the RNG state."""
        self._batch = batch
        self._rng = rng_state()
        self._norm = None
        self._bad_grad = False
        self._stepped = False

    def gradients_finite(self, norm: Optional[float] = None) -> bool:
        """Check the gradients about to be applied (``norm``: a total norm
        already computed, e.g. by clipping)."""
        if norm is None:
            norm = self._norm if self._norm is not None else total_norm(bare_module(self.model).parameters())
        finite = math.isfinite(norm)
        self._bad_grad = self._bad_grad or not finite
        return finite

    def clip_grad_norm_(self, max_norm: float, parameters: Any = None, **kwargs: Any) -> torch.Tensor:
        """``torch.nn.utils.clip_grad_norm_`` whose norm the step's check reuses."""
        if parameters is None:
            parameters = bare_module(self.model).parameters()
        norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm, **kwargs)
        self._norm = float(norm)
        return norm

    def _optimizer_step(self, *args: Any, **kwargs: Any) -> Any:
        if self._replaying:
            return None
        if not self.gradients_finite():
            return None  # keep the pre-step weights for the replay
        self._stepped = True
        return self._original_step(*args, **kwargs)

    def end(self, loss: Any) -> Optional[str]:
        """A step ended: why it is bad, or None."""
        self.step_count += 1
        loss_finite = self._loss_finite = _finite(_loss_tensor(loss))
        if not loss_finite:
            nan = bool(torch.isnan(_loss_tensor(loss).detach()).any())  # type: ignore[union-attr]
            reason = f"the loss is {'NaN' if nan else 'inf'}"
            if self.scaler is None or nan:
                return reason
        if self.scaler is not None and self._scaler_enabled():
            if self._stepped:
                self.skipped = 0
                return None
            if self._bad_grad or not loss_finite:
                self.skipped += 1
                if self.skipped >= self.patience:
                    return f"the GradScaler skipped {self.skipped} steps in a row: the overflow keeps recurring"
            return None
        if self._bad_grad:
            return "the gradients are non-finite"
        return None

    @property
    def replaying(self) -> bool:
        """True while the bad step is replayed (integrations ignore that run)."""
        return self._replaying

    def _scaler_enabled(self) -> bool:
        return bool(getattr(self.scaler, "is_enabled", lambda: True)())

    # -- plain loops ----------------------------------------------------------
    def step(self, step_fn: Callable[[Any], Any], batch: Any) -> Any:
        """Run ``step_fn(batch)`` (forward, backward, optimizer step) guarded."""
        self.begin(batch)
        result = step_fn(batch)
        if self.scaler is not None and not self._stepped and self._original_step is not None:
            self._bad_grad = True  # the scaler found inf/NaN and skipped optimizer.step
        reason = self.end(result)
        if reason is not None:
            self.trip(reason, "loop", step_fn=step_fn)
        return result

    # -- the expensive part: once ----------------------------------------------
    def trip(self, reason: str, kind: str, step_fn: Any = None, batch_idx: int = 0,
             run: Optional[Callable[[], Any]] = None) -> None:
        """Replay the bad step, write the bundle and raise ``GuardError``."""
        rank, replayers = self._ranks()
        report = GuardReport(self.step_count, rank, reason, None)
        # every rank trips in this step (the gradients are all-reduced): they
        # leave together, once the replaying ranks are done, so that a rank
        # that raises first cannot take the job (and the replay) down with it
        together = self._bad_grad and torch.distributed.is_available() and torch.distributed.is_initialized()
        if rank not in replayers:
            report.reason = f"{reason}; rank {replayers[0]} saw it and replays the step"
            self.report = report
            if together:
                torch.distributed.barrier()
            raise GuardError(report)
        try:
            self._replay(report, rank, kind, step_fn, batch_idx, run)
        finally:
            if together:
                torch.distributed.barrier()
        raise GuardError(report)

    def _replay(self, report: GuardReport, rank: int, kind: str, step_fn: Any, batch_idx: int,
                run: Optional[Callable[[], Any]]) -> None:
        directory = os.path.join(self.bundle_dir, f"step{self.step_count}" + (f"-rank{rank}" if rank else ""))
        write_bundle(directory, report, kind=kind, model=self.model, optimizer=self.optimizer,
                     batch=self._batch, rng=self._rng or rng_state(), scaler=self.scaler, step_fn=step_fn,
                     batch_idx=batch_idx, bindings=self._bindings(step_fn))
        if run is None:
            run = run_callable(kind, bare_module(self.model), self._batch, batch_idx, step_fn)
        extra: List[Any] = [type(m) for m in bare_module(self.model).modules()]
        if step_fn is not None:
            extra.append(step_fn)
        with self._replay_mode():
            report.origin = replay_step(self.model, self.optimizer, self._rng or rng_state(), run,
                                        user_files(extra))
        report.bundle = directory
        write_report(directory, report)
        self.report = report
        if self.echo:
            print(report.render(), file=sys.stderr)

    @contextlib.contextmanager
    def _replay_mode(self) -> Iterator[None]:
        """The optimizer does not step, a GradScaler keeps its scale and DDP
        does not synchronise (the other ranks are not replaying)."""
        scaler_state = self.scaler.state_dict() if self.scaler is not None else None
        no_sync = self.model.no_sync() if hasattr(self.model, "no_sync") else contextlib.nullcontext()
        self._replaying = True
        try:
            with no_sync:
                yield
        finally:
            self._replaying = False
            if scaler_state is not None:
                self.scaler.load_state_dict(scaler_state)

    def _ranks(self):
        """(this rank, the ranks that replay). Under torch.distributed the
        gradients are all-reduced, so every rank sees them go non-finite in
        the same step; the ranks whose own loss is non-finite replay (all
        ranks when none is)."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            return 0, [0]
        rank, world = dist.get_rank(), dist.get_world_size()
        if not self._bad_grad:  # only this rank's loss: the others are not here to agree
            return rank, [rank]
        mine = torch.tensor([0.0 if self._loss_finite else 1.0])
        if dist.get_backend() == "nccl":
            mine = mine.cuda()
        flags = [torch.zeros_like(mine) for _ in range(world)]
        dist.all_gather(flags, mine)
        saw = [r for r, f in enumerate(flags) if float(f) > 0]
        return rank, saw or list(range(world))

    def _bindings(self, step_fn: Any) -> Dict[str, str]:
        """The module globals the step function reads the model, optimizer
        and scaler from: rebound to the rebuilt ones when the bundle is replayed."""
        if step_fn is None:
            return {}
        namespace = getattr(step_fn, "__globals__", {})
        roles = {"model": self.model, "optimizer": self.optimizer, "scaler": self.scaler}
        out = {}
        for role, obj in roles.items():
            if obj is None:
                continue
            for name in getattr(getattr(step_fn, "__code__", None), "co_names", ()):
                if namespace.get(name) is obj:
                    out[role] = name
        return out
