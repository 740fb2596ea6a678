"""``GuardCallback``: ``nanlint.Guard`` for a Hugging Face ``Trainer``::

    from nanlint.integrations.transformers import GuardCallback
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[GuardCallback()])

Callbacks do not see the batch: a forward pre-hook on the model keeps a
reference to the inputs of each training forward (every micro-batch of a
gradient-accumulation step). The RNG state is taken at ``on_step_begin``, the
gradient norm checked at ``on_pre_optimizer_step`` (after clipping, before the
optimizer steps: a NaN loss gives non-finite gradients there). A bad step is
replayed as ``model(**inputs).loss`` for each micro-batch.
"""

from __future__ import annotations

from typing import Any, List, Optional

import torch
from transformers import TrainerCallback

from ..dynamic.guard import Guard


class GuardCallback(TrainerCallback):
    def __init__(self, bundle_dir: str = "nanlint-guard", echo: bool = True) -> None:
        self.bundle_dir = bundle_dir
        self.echo = echo
        self.guard: Optional[Guard] = None
        self._inputs: List[Any] = []
        self._hook: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None,
                       **kwargs: Any) -> None:
        self.guard = Guard(model, optimizer, bundle_dir=self.bundle_dir, echo=self.echo, wrap_optimizer=False)
        self._hook = model.register_forward_pre_hook(self._capture, with_kwargs=True)

    def _capture(self, module: Any, args: Any, kwargs: Any) -> None:
        if module.training and torch.is_grad_enabled() and not (self.guard and self.guard.replaying):
            self._inputs.append(dict(kwargs) if not args else args)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._inputs = []
        if self.guard is not None:
            self.guard.begin(self._inputs)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.guard is not None and not self.guard.gradients_finite():
            self.guard.end(None)
            self.guard.trip("the gradients are non-finite", "hf")

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.guard is not None:
            self.guard.end(None)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
