"""Training scripts with planted float16 hazards, for the guard tests.

Each script is written into a temporary directory and run as a user would
(``python train.py BUNDLE_DIR``). The model is the same everywhere; HAZARD
picks what goes wrong at step 4 (``fill``, ``exp``) or from the first step
(``adam``), and FIXED turns every hazard into its fixed twin. Lines marked
``# LINE:<name>`` are where the guard must place the origin.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List

HAZARDS = ("fill", "exp", "adam")

MODEL = '''
import sys

import torch
import torch.nn as nn

HAZARD = "{hazard}"
FIXED = {fixed}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = nn.Linear(8, 8)
        self.out = nn.Linear(8, 1)

    def forward(self, x, mask):
        scores = self.q(x) @ x.transpose(-1, -2)
        if HAZARD == "fill" and not FIXED:
            scores = scores.masked_fill(mask, float("-inf"))  # LINE:fill
            attn = torch.softmax(scores, dim=-1)
        elif HAZARD == "fill":
            attn = torch.softmax(scores.masked_fill(mask, torch.finfo(scores.dtype).min), dim=-1)
        elif not FIXED:
            weights = torch.exp(scores)  # LINE:exp
            attn = weights / weights.sum(-1, keepdim=True)
        else:
            attn = torch.softmax(scores, dim=-1)
        return self.out(attn @ x).float().mean()


def make_optimizer(params):
    if HAZARD == "adam" and not FIXED:
        return torch.optim.Adam(params, lr=1e-3, eps=1e-8)  # LINE:adam
    if HAZARD == "adam":
        return torch.optim.Adam(params, lr=1e-3, eps=1e-4)
    return torch.optim.SGD(params, lr=1e-3)


def batch_at(step, poison=True):
    g = torch.Generator().manual_seed(step)
    x = torch.randn(4, 5, 8, generator=g) * 0.5
    mask = torch.zeros(4, 5, 5, dtype=torch.bool)
    mask[:, :, 4] = True
    if step == 3 and poison:
        mask[1, 2, :] = True  # a query that may attend to nothing
        x = x * 8  # scores far above 11.09, where exp overflows float16
    return {{"x": x.half(), "mask": mask}}
'''

PLAIN = MODEL + '''
import nanlint

torch.manual_seed(0)
model = Net().half()
optimizer = make_optimizer(model.parameters())
guard = nanlint.Guard(model, optimizer, bundle_dir=sys.argv[1])


def train_step(batch):
    optimizer.zero_grad()
    loss = model(batch["x"], batch["mask"])
    loss.backward()
    guard.clip_grad_norm_(100.0)
    optimizer.step()
    return loss


if __name__ == "__main__":
    for step in range(6):
        guard.step(train_step, batch_at(step))
    print("finished")
'''


def marker_line(source: str, name: str) -> int:
    for number, line in enumerate(source.splitlines(), 1):
        if line.rstrip().endswith(f"# LINE:{name}"):
            return number
    raise AssertionError(f"no marker {name}")


def write(tmp: Path, template: str, hazard: str, fixed: bool = False, name: str = "train.py") -> Path:
    path = tmp / name
    path.write_text(template.format(hazard=hazard, fixed=fixed), encoding="utf-8")
    return path


def run(args: List[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONHASHSEED="0")
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def bundles(directory: Path) -> List[Path]:
    return sorted(p for p in directory.glob("step*") if (p / "bundle.json").is_file())
