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


LIGHTNING = MODEL + '''
import lightning as L
from torch.utils.data import DataLoader, IterableDataset

from nanlint.integrations.lightning import GuardCallback


class LitNet(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = Net().half()

    def training_step(self, batch, batch_idx):
        return self.net(batch["x"], batch["mask"])

    def configure_optimizers(self):
        return make_optimizer(self.parameters())


class Steps(IterableDataset):
    def __iter__(self):
        return (batch_at(step) for step in range(6))


if __name__ == "__main__":
    torch.manual_seed(0)
    trainer = L.Trainer(max_steps=6, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[GuardCallback(bundle_dir=sys.argv[1])])
    trainer.fit(LitNet(), DataLoader(Steps(), batch_size=None))
    print("finished")
'''

HF = MODEL + '''
from torch.utils.data import IterableDataset
from transformers import Trainer, TrainingArguments

from nanlint.integrations.transformers import GuardCallback


class HFNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = Net()

    def forward(self, x, mask, labels=None):
        return {{"loss": self.net(x, mask)}}


class Samples(IterableDataset):
    def __iter__(self):
        for step in range(6):
            batch = batch_at(step)
            for i in range(4):
                yield {{"x": batch["x"][i], "mask": batch["mask"][i]}}


if __name__ == "__main__":
    torch.manual_seed(0)
    model = HFNet().half()
    args = TrainingArguments(output_dir=sys.argv[1] + "-out", max_steps=6, per_device_train_batch_size=4,
                             use_cpu=True, report_to=[], save_strategy="no", logging_steps=100,
                             remove_unused_columns=False, dataloader_num_workers=0, max_grad_norm=0.0)
    trainer = Trainer(model=model, args=args, train_dataset=Samples(),
                      optimizers=(make_optimizer(model.parameters()), None),
                      callbacks=[GuardCallback(bundle_dir=sys.argv[1])])
    trainer.train()
    print("finished")
'''

DDP = MODEL + '''
import gc
import json
import os

import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

import nanlint

model = optimizer = None


def train_step(batch):
    optimizer.zero_grad()
    loss = model(batch["x"], batch["mask"])
    loss.backward()
    optimizer.step()
    return loss


def worker(rank, bundle_dir, port):
    global model, optimizer
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = port
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = DistributedDataParallel(Net().half())
    optimizer = make_optimizer(model.parameters())
    guard = nanlint.Guard(model, optimizer, bundle_dir=bundle_dir, echo=False)
    result = {{"rank": rank, "finished": False, "reason": None, "origin": None, "bundle": None}}
    try:
        for step in range(6):
            guard.step(train_step, batch_at(step, poison=rank == 1))  # only rank 1 gets the bad batch
        result["finished"] = True
    except nanlint.GuardError as exc:
        report = exc.report
        result.update(reason=report.reason, bundle=report.bundle,
                      origin=report.origin and {{"line": report.origin.line, "kind": report.origin.kind}})
        # whether every replaying rank had written its report when this one stopped
        result["replays_done"] = sorted(os.listdir(bundle_dir)) if os.path.isdir(bundle_dir) else []
        result["reports_done"] = sum(os.path.exists(os.path.join(bundle_dir, d, "report.json"))
                                     for d in result["replays_done"])
    with open(os.path.join(bundle_dir + "-results", f"rank{{rank}}.json"), "w") as fh:
        json.dump(result, fh)
    # the DDP model holds the process group: dropped (with everything that
    # holds it) before the group is destroyed, a gloo group does not outlive
    # destroy_process_group into interpreter shutdown, where joining its
    # worker threads aborts the process ("terminate called without an active
    # exception")
    del guard
    model = optimizer = None
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    os.makedirs(sys.argv[1] + "-results", exist_ok=True)
    mp.spawn(worker, args=(sys.argv[1], sys.argv[2]), nprocs=2)
'''


# hazard -> (step that trips, static rule at the origin line, origin kind)
EXPECTED = {
    "fill": (4, "NL003", "new-nan"),
    "exp": (4, "NL002", "new-inf"),
    "adam": (2, "NL001", "optimizer-state"),
}


def check_origin(bundle: Path, script: Path, hazard: str) -> dict:
    """The bundle's report places the origin at the planted line, and
    `nanlint confirm --replay` reproduces that report from another directory."""
    step, code, kind = EXPECTED[hazard]
    report = __import__("json").loads((bundle / "report.json").read_text())
    assert report["step"] == step, report
    origin = report["origin"]
    line = marker_line(script.read_text(), hazard)
    assert (origin["path"], origin["line"], origin["kind"], origin["code"]) == (
        str(script.resolve()), line, kind, code), origin
    other = bundle.parent.parent / "elsewhere"
    other.mkdir(exist_ok=True)
    replay = run(["-m", "nanlint", "confirm", "--replay", str(bundle.resolve()), "--output-format", "json"], other)
    assert replay.returncode == 1, replay.stderr
    assert __import__("json").loads(replay.stdout)["origin"] == origin
    return report
