"""The guard's cost on a GPT-2-small-sized training step on CPU, while nothing fires.

GPT-2-small width and heads (d_model 768, 12 heads, vocab 50257, context 128) with
--layers blocks (default 2: a full 12-layer step is too slow on 2 cores for many
paired runs). Plain step, guarded step (nanlint.Guard.step) and a step under
torch.autograd.detect_anomaly() are run interleaved, --pairs times; prints the
median of the per-round ratios to the plain step. Target: guard <= 1.05x.

    python bench/guard_overhead.py [--layers 2] [--pairs 9]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn

import nanlint


class Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, layers: int, d: int = 768, heads: int = 12, vocab: int = 50257, ctx: int = 128) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight
        self.register_buffer("mask", torch.triu(torch.full((ctx, ctx), float("-inf")), 1))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))
        for block in self.blocks:
            x = block(x, self.mask)
        logits = self.head(self.ln(x))
        return nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=9)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = GPT(args.layers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    guard = nanlint.Guard(model, optimizer, bundle_dir="/tmp/nanlint-bench-guard", echo=False)
    batch = torch.randint(0, 50257, (args.batch, 128))

    def train_step(ids: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = model(ids)
        loss.backward()
        optimizer.step()
        return loss

    def plain() -> None:
        original = guard._original_step  # the optimizer's own step, unchecked
        optimizer.zero_grad(set_to_none=True)
        model(batch).backward()
        original()

    def guarded() -> None:
        guard.step(train_step, batch)

    def anomaly() -> None:
        with torch.autograd.detect_anomaly(check_nan=True):
            plain()

    def timed(fn) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    for fn in (plain, guarded, anomaly):  # warm-up
        fn()
    ratios_guard, ratios_anomaly, base = [], [], []
    for i in range(args.pairs):
        order = [plain, guarded, anomaly] if i % 2 == 0 else [anomaly, guarded, plain]
        t = {fn.__name__: timed(fn) for fn in order}
        base.append(t["plain"])
        ratios_guard.append(t["guarded"] / t["plain"])
        ratios_anomaly.append(t["anomaly"] / t["plain"])
    params = sum(p.numel() for p in model.parameters())
    print(f"GPT-2-small width, {args.layers} layers, {params / 1e6:.1f}M parameters, batch {args.batch}x128, "
          f"CPU float32, {torch.get_num_threads()} threads; plain step median {statistics.median(base):.3f} s")
    print(f"guard / plain:          {statistics.median(ratios_guard):.3f}x (median of {args.pairs} interleaved rounds)")
    print(f"detect_anomaly / plain: {statistics.median(ratios_anomaly):.3f}x")


if __name__ == "__main__":
    main()
