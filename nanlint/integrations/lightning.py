"""``GuardCallback``: ``nanlint.Guard`` for a PyTorch Lightning ``Trainer``::

    from nanlint.integrations.lightning import GuardCallback
    trainer = Trainer(callbacks=[GuardCallback()])

Per step: the batch and RNG state at ``on_train_batch_start``, the gradient
norm at ``on_before_optimizer_step`` (before Lightning steps the optimizer,
so a bad step is never applied) and the loss at ``on_train_batch_end``. A bad
step is replayed through the module's ``training_step``.
"""

from __future__ import annotations

from typing import Any, Optional

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the older package name
    from pytorch_lightning.callbacks import Callback

from ..dynamic.guard import Guard


class GuardCallback(Callback):
    def __init__(self, bundle_dir: str = "nanlint-guard", echo: bool = True) -> None:
        super().__init__()
        self.bundle_dir = bundle_dir
        self.echo = echo
        self.guard: Optional[Guard] = None
        self._batch_idx = 0

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self.guard is None:
            optimizer = trainer.optimizers[0] if trainer.optimizers else None
            self.guard = Guard(pl_module, optimizer, bundle_dir=self.bundle_dir, echo=self.echo,
                               wrap_optimizer=False)
        self._batch_idx = batch_idx
        self.guard.begin(batch)

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        if self.guard is not None and not self.guard.gradients_finite():
            self.guard.end(None)
            self.guard.trip("the gradients are non-finite", "lightning", batch_idx=self._batch_idx)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.guard is None:
            return
        reason = self.guard.end(outputs)
        if reason is not None:
            self.guard.trip(reason, "lightning", batch_idx=batch_idx)
