"""Training-framework integrations of ``nanlint.Guard``.

- ``nanlint.integrations.lightning.GuardCallback``: a PyTorch Lightning callback;
- ``nanlint.integrations.transformers.GuardCallback``: a Hugging Face ``Trainer`` callback.

Each module imports its framework (and torch) when imported; nanlint never
depends on them.
"""
