"""What the dynamic checker's monitor costs: forward + backward of a small
transformer block on CPU in float32, timed

- plain,
- under the monitor (`with nanlint.watch():`),
- under `torch.autograd.detect_anomaly()` (PyTorch's own NaN finder),

as the median of several runs after a warm-up, then the ratios
monitor/plain and anomaly/plain. Goal: monitor < anomaly and monitor <= 3x plain.

    python bench/confirm_overhead.py [--repeats 15] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

import nanlint


def make(seed: int = 0):
    torch.manual_seed(seed)
    layer = torch.nn.TransformerEncoderLayer(256, 4, 1024, batch_first=True)
    x = torch.randn(8, 64, 256)
    return layer, x


def step(layer, x) -> None:
    layer.zero_grad(set_to_none=True)
    layer(x).sum().backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    layer, x = make()
    layer.train()

    def plain() -> None:
        step(layer, x)

    def monitored() -> None:
        with nanlint.watch() as seen:
            step(layer, x)
        assert not seen.events, seen.events

    def anomaly() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Anomaly Detection has been enabled" on every entry
            with torch.autograd.detect_anomaly():
                step(layer, x)

    # interleave the three so that drift (thermal, other load) hits all alike
    results = {"plain": [], "monitor": [], "anomaly": []}
    fns = {"plain": plain, "monitor": monitored, "anomaly": anomaly}
    for fn in fns.values():  # warm-up
        for _ in range(3):
            fn()
    for _ in range(args.repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            results[name].append(time.perf_counter() - start)
    med = {name: statistics.median(ts) for name, ts in results.items()}

    print(f"torch {torch.__version__}, CPU, float32, {torch.get_num_threads()} thread(s); "
          f"TransformerEncoderLayer(256, 4, 1024, batch_first=True) on (8, 64, 256), forward+backward; "
          f"median of {args.repeats}")
    for name in ("plain", "monitor", "anomaly"):
        print(f"  {name:<8} {med[name] * 1e3:8.2f} ms")
    ratio_m = med["monitor"] / med["plain"]
    ratio_a = med["anomaly"] / med["plain"]
    print(f"  monitor/plain = {ratio_m:.2f}x   anomaly/plain = {ratio_a:.2f}x")
    ok = ratio_m < ratio_a and ratio_m <= 3.0
    print(f"  goal (monitor < anomaly and monitor <= 3x plain): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
