"""Facts that cross modules of the checked project: constants, config
defaults and helper summaries imported from another module, and the cache
that must forget a file's findings when a module it imports changes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "nanlint", *args], cwd=cwd, capture_output=True, text=True)


def findings(proc):
    assert proc.returncode in (0, 1), proc.stderr
    return [(f["path"], f["line"], f["code"]) for f in json.loads(proc.stdout)]


def package(root: Path, files: dict) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


# a probability's guard: a sigmoid, float16 under autocast too: shown at the default (high) confidence
#: a training step in pure half: the project runs in float16, as a float16 hazard needs
TRAIN_HALF = "def step(model, x):\n    model.half()(x.half()).sum().backward()\n"
MODEL = "from .consts import EPS\n\n\ndef nll(logits):\n    probs = logits.sigmoid()\n    return -(probs + EPS).log()\n"


def test_a_changed_constant_in_an_imported_module_invalidates_the_cached_findings(tmp_path):
    package(tmp_path, {"pkg/__init__.py": "", "pkg/consts.py": "EPS = 1e-3\n", "pkg/model.py": MODEL,
                       "pkg/train.py": TRAIN_HALF})
    assert findings(run("check", "--output-format", "json", ".", cwd=tmp_path)) == []
    (tmp_path / "pkg/consts.py").write_text("EPS = 1e-8\n")
    assert findings(run("check", "--output-format", "json", ".", cwd=tmp_path)) == [("pkg/model.py", 6, "NL001")]
    # checking the one file (as pre-commit does) sees the imported module too
    assert findings(run("check", "--output-format", "json", "pkg/model.py", cwd=tmp_path)) == [
        ("pkg/model.py", 6, "NL001")]
    (tmp_path / "pkg/consts.py").write_text("EPS = 1e-3\n")
    assert findings(run("check", "--output-format", "json", ".", cwd=tmp_path)) == []


@pytest.mark.parametrize("spelling", [
    "from .consts import EPS\nG = EPS",
    "from pkg.consts import EPS as TINY\nG = TINY",
    "from . import consts\nG = consts.EPS",
    "import pkg.consts as c\nG = c.EPS",
    "from pkg import consts as k\nG = k.EPS",
    "from .consts import Config\nG = Config.eps",
    "from .consts import BACK\nG = BACK",
    "from .reexport import EPS\nG = EPS",
])
def test_every_import_spelling_reaches_the_constant(tmp_path, spelling):
    head, value = spelling.split("\n")
    use = value.split(" = ")[1]
    package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/consts.py": "EPS = 1e-8\nNEG = -EPS\nBACK = -NEG * 1.0\n\n\nclass Config:\n    eps: float = 1e-8\n",
        "pkg/reexport.py": "from .consts import EPS\n",
        "pkg/model.py": f"{head}\n\n\ndef unit(x, n):\n    return x / (n + {use})\n",
        # the project trains in mixed precision (else a float16-only edge case is low)
        "pkg/train.py": "import torch\n\n\ndef step(model, x):\n    with torch.autocast('cuda'):\n"
                        "        return model(x)\n",
    })
    # a norm's guard needs a zero row: medium confidence
    proc = run("check", "--no-cache", "--min-confidence", "medium", "--output-format", "json", ".", cwd=tmp_path)
    assert findings(proc) == [("pkg/model.py", 5, "NL001")]
    assert "from `pkg." in json.loads(proc.stdout)[0]["message"]


def test_unresolvable_or_broken_imported_modules_are_quiet(tmp_path):
    package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/consts.py": "EPS = (1e-8\n",  # a syntax error there: NL000 there, nothing here
        "pkg/model.py": "from .consts import EPS\nfrom torch import nn\nfrom .missing import OTHER\n"
                        "from ...outside import FAR\n\n\ndef unit(x, n):\n"
                        "    return x / (n + EPS) + x / (n + OTHER) + x / (n + FAR)\n",
    })
    proc = run("check", "--no-cache", "--output-format", "json", ".", cwd=tmp_path)
    assert findings(proc) == [("pkg/consts.py", 1, "NL000")]


def test_helpers_and_configs_of_other_modules_give_the_same_findings_for_any_job_count(tmp_path):
    package(tmp_path, {
        "proj/__init__.py": "",
        "proj/consts.py": "TINY = 1e-8\nSAFE = 1e-3\n",
        "proj/config.py": "from dataclasses import dataclass\n\n\n@dataclass\nclass Cfg:\n    eps: float = 1e-8\n",
        "proj/helpers.py": "import torch.nn.functional as F\n\n\ndef log_probs(x):\n    return F.log_softmax(x, -1)\n\n\n"
                           "def logits(x):\n    return x * 2\n",
        "proj/a.py": "import torch\nfrom .consts import TINY, SAFE\n\n\ndef f(x, n):\n"
                     "    return x / (n + TINY) + x / (n + SAFE)\n",
        "proj/b.py": "import torch\nfrom proj.helpers import log_probs, logits\n\n\ndef g(x):\n"
                     "    return torch.exp(log_probs(x)) + torch.exp(logits(x))\n",
        "proj/c.py": "from .config import Cfg\n\n\ndef h(x, n, cfg: Cfg):\n    return x / (n + cfg.eps)\n",
        "proj/d.py": "import torch\n\n\ndef k(x):\n    return torch.exp(x)\n",
    })
    outputs = []
    for jobs in ("1", "2"):
        proc = run("check", "--no-cache", "--min-confidence", "low", "--output-format", "json", "-j", jobs, ".",
                   cwd=tmp_path)
        outputs.append(proc.stdout)
    assert outputs[0] == outputs[1]
    got = {(p, line, code) for p, line, code in findings(subprocess.CompletedProcess([], 1, outputs[0], ""))}
    # the log-softmax helper bounds its exp; `logits` does not; the config default is a finding in c.py
    assert got == {("proj/a.py", 6, "NL001"), ("proj/b.py", 6, "NL002"), ("proj/c.py", 5, "NL001"),
                   ("proj/d.py", 5, "NL002")}
    # a warm run answers the same from the cache, on one job or two
    for jobs in ("1", "2", "2"):
        proc = run("check", "--min-confidence", "low", "--output-format", "json", "-j", jobs, ".", cwd=tmp_path)
        assert proc.stdout == outputs[0]


def test_imports_are_read_from_the_lines_that_hold_them():
    from nanlint.analysis.project import Imported, read_imports

    text = (
        "'''import this: a docstring line does not start with the word'''\n"
        "from .consts import (\n"
        "    EPS,  # important: kept\n"
        "    important as imp,\n"
        ")\n"
        "import torch.nn as nn, numpy\n"
        "x = 1; import os\n"
        "    from ..up import *\n"
        "if True:\n"
        "    from pkg.sub import name  # import again: one line, one reading\n"
        "from . import sibling\r\n"
        "import_path = 'not an import'\n"
    )
    assert read_imports(text, ["a", "b"]) == [
        Imported("EPS", "a.b.consts", "EPS"),
        Imported("imp", "a.b.consts", "important"),
        Imported("name", "pkg.sub", "name"),
        Imported("sibling", "a.b", "sibling"),
        Imported("nn", "torch.nn", None),
        Imported("numpy", "numpy", None),
    ]


BASE_SWEEPS = (
    "from torch import nn\n\n\nclass Module(nn.Module):\n"
    "    def init_states(self):\n"
    "        for child in self.children():\n"
    "            child.init_states()\n"
    "        self._init_self_parameters()\n"
)
# a look-alike hook: it names the one attribute it sets, not every parameter of a subclass
BASE_NAMES_ITS_OWN = (
    "from torch import nn\n\n\nclass Module(nn.Module):\n"
    "    def reset_parameters(self):\n"
    "        nn.init.ones_(self.scale)\n"
)

BASE_SWEEPS_A_SETTING = (
    "from torch import nn\n\n\nclass Module(nn.Module):\n"
    "    def reset_attention_backend(self):\n"
    "        for module in self.modules():\n"
    "            module.backend = None\n"
)


def test_a_base_class_of_another_module_that_initialises_every_parameter_covers_its_subclasses(tmp_path):
    """torchtitan-style: every layer subclasses a project ``Module`` whose
    ``init_states`` walks the children; the base is two imports away."""
    package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/protocols/__init__.py": "",
        "pkg/protocols/module.py": BASE_SWEEPS,
        "pkg/common.py": "from pkg.protocols.module import Module\n\n\nclass Experts(Module):\n    pass\n",
        "pkg/moe.py": "import torch\nfrom torch import nn\nfrom pkg import common\n\n\n"
                      "class GatedExperts(common.Experts):\n    def __init__(self, n):\n        super().__init__()\n"
                      "        self.w1 = nn.Parameter(torch.empty(n, n))\n",
    })
    assert findings(run("check", "--output-format", "json", ".", cwd=tmp_path)) == []
    # the base two imports away changes: the warm run must not answer from the cache
    (tmp_path / "pkg/protocols/module.py").write_text(BASE_NAMES_ITS_OWN)
    assert findings(run("check", "--output-format", "json", ".", cwd=tmp_path)) == [("pkg/moe.py", 9, "NL110")]
    # walking every module to clear a setting initialises nothing
    (tmp_path / "pkg/protocols/module.py").write_text(BASE_SWEEPS_A_SETTING)
    assert findings(run("check", "--output-format", "json", ".", cwd=tmp_path)) == [("pkg/moe.py", 9, "NL110")]
    (tmp_path / "pkg/protocols/module.py").write_text(BASE_SWEEPS)
    assert findings(run("check", "--output-format", "json", ".", cwd=tmp_path)) == []
    assert findings(run("check", "--no-cache", "--output-format", "json", ".", cwd=tmp_path)) == []


MODEL_WITH_EMPTY = (
    "import torch\nfrom torch import nn\n\n\nclass Encoder(nn.Module):\n    def __init__(self, n, d):\n"
    "        super().__init__()\n        self.positional_embedding = nn.Parameter(torch.empty(n, d))\n"
)


def test_an_inference_release_fills_its_parameters_from_a_checkpoint(tmp_path):
    """whisper-style: the project loads trained weights and nothing in it
    trains. Its ``torch.empty`` parameters are low; once a training script
    appears they are shown again, also on a warm run."""
    package(tmp_path, {
        "pyproject.toml": "[project]\nname = 'release'\n",
        "release/__init__.py": "",
        "release/model.py": MODEL_WITH_EMPTY,
        "release/load.py": "import torch\n\n\ndef load_model(model, path):\n"
                           "    model.load_state_dict(torch.load(path))\n    return model\n",
    })
    low = run("check", "--min-confidence", "low", "--output-format", "json", ".", cwd=tmp_path)
    (finding,) = json.loads(low.stdout)
    assert finding["confidence"] == "low" and "never trains a model" in finding["message"]
    assert findings(run("check", "--output-format", "json", ".", cwd=tmp_path)) == []
    package(tmp_path, {"scripts/train.py": "def step(model, loss, opt):\n    loss.backward()\n    opt.step()\n"})
    assert findings(run("check", "--output-format", "json", ".", cwd=tmp_path)) == [
        ("release/model.py", 8, "NL110")]


def test_a_project_that_neither_trains_nor_loads_weights_keeps_the_finding(tmp_path):
    """A snippet or a library of layers: nothing says a checkpoint fills the parameter."""
    package(tmp_path, {"pyproject.toml": "[project]\nname = 'layers'\n", "layers/model.py": MODEL_WITH_EMPTY})
    assert findings(run("check", "--output-format", "json", ".", cwd=tmp_path)) == [("layers/model.py", 8, "NL110")]


EXPERTS = (
    "import torch\nfrom torch import nn\n\n\nclass Experts(nn.Module):\n    def __init__(self, n, d):\n"
    "        super().__init__()\n        self.gate_up = nn.Parameter(torch.empty(n, d, d))\n"
)


@pytest.mark.parametrize("patch, patched", [
    ("from pkg.experts import Experts\nimport modeling\n\n\ndef apply():\n    modeling.MixtralExperts = Experts\n", True),
    ("from .experts import Experts\n\n\ndef apply(layer):\n    _patch_module(layer.mlp.experts, Experts)\n", True),
    # look-alikes: the class is built, not patched in; another module's class of the same name is patched
    ("from pkg.experts import Experts\n\n\ndef build(n, d):\n    return Experts(n, d)\n", False),
    ("from pkg.other import Experts\nimport modeling\n\n\ndef apply():\n    modeling.MixtralExperts = Experts\n", False),
])
def test_a_class_patched_over_another_librarys_class_is_built_and_loaded_by_it(tmp_path, patch, patched):
    """Liger-style kernels: `modeling_mixtral.MixtralExperts = LigerExperts`. The
    patched library builds the model and loads or initialises its weights."""
    package(tmp_path, {"pkg/__init__.py": "", "pkg/experts.py": EXPERTS, "pkg/other.py": EXPERTS,
                       "pkg/patch.py": patch})
    shown = findings(run("check", "--output-format", "json", "pkg/experts.py", cwd=tmp_path))
    assert shown == ([] if patched else [("pkg/experts.py", 8, "NL110")])
    if patched:
        # the patch goes away: the warm run must not answer from the cache
        (tmp_path / "pkg/patch.py").write_text("")
        assert findings(run("check", "--output-format", "json", "pkg/experts.py", cwd=tmp_path)) == [
            ("pkg/experts.py", 8, "NL110")]


NORM = (
    "import torch\nfrom torch import nn\n\n\nclass RMSNorm2d(nn.Module):\n    def __init__(self, n):\n"
    "        super().__init__()\n        self.weight = nn.Parameter(torch.empty(n))\n"
)


@pytest.mark.parametrize("walker, covered", [
    ("def init_modules(model, init_func):\n    for m in model.modules():\n"
     "        weight = getattr(m, 'weight', None)\n        if isinstance(weight, nn.Parameter):\n"
     "            init_func(weight)\n", True),
    ("def init_all(model):\n    for name, m in model.named_modules():\n        if hasattr(m, 'weight'):\n"
     "            nn.init.normal_(m.weight, std=0.02)\n", True),
    # a callback for `model.apply(...)` (imaginaire's `weights_init` returns one)
    ("def weights_init(gain):\n    def init_func(m):\n        if hasattr(m, 'weight') and m.weight is not None:\n"
     "            nn.init.normal_(m.weight.data, 0.0, gain)\n    return init_func\n", True),
    # look-alikes: the same walk, or a callback, freezes the weights: it initialises nothing
    ("def freeze(model):\n    for m in model.modules():\n        weight = getattr(m, 'weight', None)\n"
     "        if weight is not None:\n            weight.requires_grad_(False)\n", False),
    ("def freeze(m):\n    if hasattr(m, 'weight'):\n        m.weight.requires_grad_(False)\n", False),
])
def test_a_project_function_that_initialises_every_modules_weight_covers_custom_layers(tmp_path, walker, covered):
    """Open-Sora's `init_modules`: its catch-all branch initialises `getattr(m, "weight")`
    on any module, custom norms included."""
    package(tmp_path, {"pkg/__init__.py": "", "pkg/norm.py": NORM,
                       "pkg/init.py": "from torch import nn\n\n\n" + walker})
    shown = findings(run("check", "--output-format", "json", ".", cwd=tmp_path))
    assert shown == ([] if covered else [("pkg/norm.py", 8, "NL110")])
    if covered:
        (tmp_path / "pkg/init.py").write_text("")
        assert findings(run("check", "--output-format", "json", ".", cwd=tmp_path)) == [("pkg/norm.py", 8, "NL110")]


OPS = (
    "import torch\n\n\ndef ratio(logp, logq):\n    return torch.exp(logp - logq)\n\n\n"
    "def angle(a, b):\n    cos = (torch.nn.functional.normalize(a, dim=-1) * torch.nn.functional.normalize(b, dim=-1)).sum(-1)\n"
    "    return torch.acos(cos)\n"
)


@pytest.mark.parametrize("caller, shown", [
    ("from pkg.ops import ratio\n\n\ndef loss(out, y):\n    return ratio(out.float(), y.float()).mean()\n", []),
    ("from pkg import ops\n\n\ndef loss(out, y):\n    return ops.ratio(out.double(), y.double()).mean()\n", []),
    # look-alikes: a caller passes the model's own dtype; one of two callers does;
    # the function is handed on as a value, so its calls are not all seen
    ("from pkg.ops import ratio\n\n\ndef loss(out, y):\n    return ratio(out, y).mean()\n", [("pkg/ops.py", 5, "NL002")]),
    ("from pkg.ops import ratio\n\n\ndef a(out, y):\n    return ratio(out.float(), y.float())\n\n\n"
     "def b(out, y):\n    return ratio(out, y)\n", [("pkg/ops.py", 5, "NL002")]),
    ("from pkg.ops import ratio\n\nCHOICES = {'ratio': ratio}\n\n\ndef loss(out, y):\n    return ratio(out.float(), y.float())\n",
     [("pkg/ops.py", 5, "NL002")]),
])
def test_a_public_function_holds_what_every_caller_in_the_project_passes(tmp_path, caller, shown):
    """A function's parameter is float32 when every call of it in the project,
    in other modules too, passes a float32 value; a caller in test code does
    not count (tests choose their own inputs)."""
    package(tmp_path, {"pkg/__init__.py": "", "pkg/ops.py": OPS.split("\n\n\ndef angle")[0] + "\n",
                       "pkg/train.py": caller,
                       "tests/test_ops.py": "from pkg.ops import ratio\n\n\ndef test_ratio(x):\n    assert ratio(x, x)\n"})
    args = ("check", "--min-confidence", "low", "--output-format", "json", ".")
    assert [f for f in findings(run(*args, cwd=tmp_path)) if f[0].startswith("pkg")] == shown
    if not shown:
        # a caller changes: the cached answer for ops.py must not survive it
        (tmp_path / "pkg/train.py").write_text(caller.replace(".float()", "").replace(".double()", ""))
        assert [f for f in findings(run(*args, cwd=tmp_path)) if f[0].startswith("pkg")] == [("pkg/ops.py", 5, "NL002")]


@pytest.mark.parametrize("use, shown", [
    ("    return torch.rad2deg(angle(e1, e2)).abs() < thr\n", []),
    ("    deg = torch.rad2deg(angle(e1, e2))\n    return (180.0 - deg.abs()).abs() < thr\n", []),
    # look-alike: the angle goes into a loss, and its gradient with it
    ("    return torch.rad2deg(angle(e1, e2)).mean() * thr\n", [("pkg/ops.py", 10, "NL105")]),
])
def test_no_gradient_leaves_a_function_whose_every_caller_only_compares_its_result(tmp_path, use, shown):
    """alphafold3-style colinearity test: the angle of two edges, only compared with a threshold."""
    package(tmp_path, {"pkg/__init__.py": "", "pkg/ops.py": OPS,
                       "pkg/frames.py": "import torch\nfrom .ops import angle\n\n\ndef colinear(e1, e2, thr):\n" + use})
    proc = run("check", "--no-cache", "--output-format", "json", ".", cwd=tmp_path)
    assert [f for f in findings(proc) if f[2] == "NL105"] == shown


REF = (
    "import torch\n\n\ndef scan_ref(u, delta, A):\n    dA = torch.exp(torch.einsum('bdl,dn->bdln', delta, A))\n"
    "    return (dA * u[..., None]).sum(-1)\n\n\ndef inner_ref(u, delta, A):\n    return scan_ref(u, delta, A)\n"
)


@pytest.mark.parametrize("users, confidence", [
    # only tests import the reference (directly, or through a function only tests call)
    ({"tests/ops/test_scan.py": "from pkg.ops import inner_ref, scan_ref\n\n\ndef test_scan(u, d, A):\n"
                                "    assert scan_ref(u, d, A) is not None and inner_ref(u, d, A) is not None\n"},
     "low"),
    ({"tests/test_inner.py": "from pkg.ops import inner_ref\n\n\ndef test_inner(u, d, A):\n    assert inner_ref(u, d, A) is not None\n"},
     "low"),
    # look-alikes: a model module calls it too; nothing calls it at all
    ({"tests/ops/test_scan.py": "from pkg.ops import scan_ref\n\n\ndef test_scan(u, d, A):\n    assert scan_ref(u, d, A) is not None\n",
      "pkg/model.py": "from pkg.ops import scan_ref\n\n\ndef forward(u, d, A):\n    return scan_ref(u, d, A)\n"},
     "high"),
    ({}, "high"),
])
def test_a_reference_implementation_only_tests_run_is_low(tmp_path, users, confidence):
    """mamba's selective_scan_ref: the kernels' tests compare against it."""
    # the project runs its model in pure half (else the exp is medium: autocast computes it in float32)
    package(tmp_path, {"pkg/__init__.py": "", "pkg/ops.py": REF, "pkg/half.py": "def run(m, x):\n    return m.half()(x)\n",
                       **users})
    proc = run("check", "--no-cache", "--min-confidence", "low", "--output-format", "json", ".", cwd=tmp_path)
    assert proc.returncode in (0, 1), proc.stderr
    found = [f for f in json.loads(proc.stdout) if f["code"] == "NL002" and f["path"] == "pkg/ops.py"]
    assert [f["confidence"] for f in found] == [confidence]
    assert ("only tests run" in found[0]["message"]) == (confidence == "low")


def test_callers_are_unknown_when_the_project_is_too_large_to_list(tmp_path, monkeypatch):
    """Past the scan limit the file listing stops, so an importer may be
    missing: no function's callers are listed then (none is concluded from)."""
    from nanlint.analysis import project

    package(tmp_path, {"pkg/__init__.py": "", "pkg/ops.py": OPS,
                       "pkg/a.py": "from pkg.ops import ratio\n", "pkg/b.py": "from pkg.ops import ratio\n"})
    ops = str(tmp_path / "pkg/ops.py")
    monkeypatch.setattr(project, "_IMPORTERS", {})
    monkeypatch.setattr(project, "_SOURCES", {})
    assert [c[0] for c in project.callers(ops, "ratio", str(tmp_path))] == [
        str(tmp_path / "pkg/a.py"), str(tmp_path / "pkg/b.py")]
    monkeypatch.setattr(project, "_IMPORTERS", {})
    monkeypatch.setattr(project, "_SOURCES", {})
    monkeypatch.setattr(project, "_SCAN_LIMIT", 2)
    assert project.callers(ops, "ratio", str(tmp_path)) is None


WHISPER = (
    "import torch\nfrom torch import nn\n\n\nclass Decoder(nn.Module):\n    def __init__(self, n, d):\n"
    "        super().__init__()\n        self.positional_embedding = nn.Parameter(torch.empty(n, d))\n\n\n"
    "class Model(nn.Module):\n    def __init__(self, n, d):\n        super().__init__()\n        self.decoder = Decoder(n, d)\n"
)


@pytest.mark.parametrize("loader, confidence", [
    ("def load_model(path):\n    ckpt = torch.load(path)\n    model = Model(**ckpt['dims'])\n"
     "    model.load_state_dict(ckpt['model_state_dict'])\n    return model\n", "low"),
    # a wrapper class whose constructor builds the model and loads it (so-vits-svc's WhisperPPG)
    ("class Encoder:\n    def __init__(self, path):\n        ckpt = torch.load(path)\n"
     "        model = Model(**ckpt['dims'])\n        model.load_state_dict(ckpt['model_state_dict'])\n"
     "        self.model = model\n", "low"),
    # a wrapper that builds it from the module it imports, into its own attribute, and loads
    # that attribute (TimesFM's `self._model = ppd.Decoder(config)`)
    ("from . import model as ppd\n\n\nclass TimesFm:\n    def load(self, path):\n"
     "        self._model = ppd.Model(4, 8)\n        self._model.load_state_dict(torch.load(path))\n", "low"),
    # look-alikes: the attribute built is not the one loaded; the other module builds the
    # model and trains it from scratch
    ("from . import model as ppd\n\n\nclass TimesFm:\n    def load(self, path):\n"
     "        self._model = ppd.Model(4, 8)\n        self._head.load_state_dict(torch.load(path))\n", "high"),
    ("def build(n, d):\n    model = Model(n, d)\n    return model.cuda()\n", "high"),
    # look-alike: a wrapper class that builds it without loading anything
    ("class Trainer:\n    def __init__(self, n, d):\n        self.model = Model(n, d)\n", "high"),
])
def test_a_model_another_module_builds_and_loads_holds_the_checkpoint(tmp_path, loader, confidence):
    """whisper: `load_model` in the package's `__init__` builds `Whisper(dims)` and loads it."""
    package(tmp_path, {"pkg/__init__.py": "import torch\nfrom .model import Model\n\n\n" + loader, "pkg/model.py": WHISPER,
                       # a test that builds the model without loading it does not count
                       "tests/test_model.py": "from pkg.model import Model\n\n\ndef test_model():\n    Model(4, 8)\n",
                       # the project trains (fine-tunes), so it is no inference release
                       "pkg/train.py": "def step(model, loss):\n    loss.backward()\n"})
    proc = run("check", "--no-cache", "--min-confidence", "low", "--output-format", "json", ".", cwd=tmp_path)
    assert proc.returncode in (0, 1), proc.stderr
    found = [f for f in json.loads(proc.stdout) if f["code"] == "NL110"]
    assert [(f["path"], f["confidence"]) for f in found] == [("pkg/model.py", confidence)]


def test_a_module_that_star_imports_the_function_calls_it_by_its_own_name(tmp_path, monkeypatch):
    """`from .ops import *` calls `ratio` under its own name, and passes the name on to the
    modules that take it from there (another star import, or `from pkg.b import ratio`); a
    private name is no part of a star import, and a star importer that never names it is no caller."""
    from nanlint.analysis import project

    package(tmp_path, {"pkg/__init__.py": "", "pkg/ops.py": OPS + "\n\ndef _hidden(x):\n    return x\n",
                       "pkg/a.py": "from pkg.ops import ratio\n",
                       "pkg/b.py": "from .ops import *\n\n\ndef f(x, y):\n    return ratio(x, y)\n",
                       "pkg/c.py": "from .b import *\n\n\ndef g(x, y):\n    return ratio(x, y) + _hidden(x)\n",
                       "pkg/d.py": "from pkg.b import ratio\n", "pkg/e.py": "from .ops import *\n"})
    monkeypatch.setattr(project, "_IMPORTERS", {})
    found = project.callers(str(tmp_path / "pkg/ops.py"), "ratio", str(tmp_path))
    assert [(c[0][len(str(tmp_path)) + 1:], c[1]) for c in found] == [
        ("pkg/a.py", "ratio"), ("pkg/b.py", "*ratio"), ("pkg/c.py", "*ratio"), ("pkg/d.py", "ratio")]
    assert project.callers(str(tmp_path / "pkg/ops.py"), "_hidden", str(tmp_path)) == []
    # every star importer is watched: one may start calling the function
    assert [p[len(str(tmp_path)) + 1:] for p in project.module_importers(str(tmp_path / "pkg/ops.py"), str(tmp_path))] == [
        "pkg/b.py", "pkg/c.py", "pkg/e.py"]
    # a package `__init__` that star-imports it re-exports it to the package's users: listed,
    # though it never names it (so `ratio` is not a function only tests run)
    (tmp_path / "pkg/__init__.py").write_text("from .ops import *\n")
    for cache in ("_IMPORTERS", "_IMPORTS", "_STARS"):
        monkeypatch.setattr(project, cache, {})
    found = project.callers(str(tmp_path / "pkg/ops.py"), "ratio", str(tmp_path))
    assert ("pkg/__init__.py", "*ratio") in [(c[0][len(str(tmp_path)) + 1:], c[1]) for c in found]


@pytest.mark.parametrize("caller, shown", [
    # the caller star-imports the helper and calls it under no_grad only (torch-ngp's
    # `linear_to_srgb` of rendered predictions)
    ("from pkg.ops import *\n\n\ndef test_step(model, x):\n    with torch.no_grad():\n        return to_srgb(model(x))\n",
     []),
    # look-alike: it also calls it in training, where a gradient flows
    ("from pkg.ops import *\n\n\ndef train_step(model, x):\n    return to_srgb(model(x)).mean()\n",
     [("pkg/ops.py", 5, "NL109")]),
])
def test_a_star_importers_calls_are_read_as_calls(tmp_path, caller, shown):
    ops = ("import torch\n\n\ndef to_srgb(x):\n    return torch.where(x < 0.0031308, 12.92 * x, 1.055 * x ** 0.41666 - 0.055)\n")
    package(tmp_path, {"pkg/__init__.py": "", "pkg/ops.py": ops, "pkg/render.py": "import torch\n" + caller})
    assert findings(run("check", "--no-cache", "--output-format", "json", ".", cwd=tmp_path)) == shown


@pytest.mark.parametrize("users, shown", [
    # nerfstudio: camera utilities called by the dataparsers only, however many
    ({f"pkg/data/parsers/p{i}.py": "from pkg import ops\n\n\ndef parse(a, b):\n    return ops.angle(a, b)\n"
      for i in range(8)}, []),
    ({"pkg/datasets/load.py": "from pkg.ops import angle\n\n\ndef load(a, b):\n    return angle(a, b)\n",
      "pkg/metrics.py": "from pkg.ops import angle\n\n\ndef score(a, b):\n    return angle(a, b).mean()\n"}, []),
    # look-alikes: a model module calls it too; nothing calls it
    ({"pkg/data/parse.py": "from pkg import ops\n\n\ndef parse(a, b):\n    return ops.angle(a, b)\n",
      "pkg/model.py": "from pkg import ops\n\n\ndef forward(a, b):\n    return ops.angle(a, b).mean()\n"},
     [("pkg/ops.py", 10, "NL105")]),
    ({}, [("pkg/ops.py", 10, "NL105")]),
])
def test_no_gradient_leaves_a_function_only_data_code_calls(tmp_path, users, shown):
    package(tmp_path, {"pkg/__init__.py": "", "pkg/ops.py": OPS, **users})
    proc = run("check", "--no-cache", "--output-format", "json", ".", cwd=tmp_path)
    assert [f for f in findings(proc) if f[2] == "NL105"] == shown


def test_a_module_importer_that_never_names_the_function_is_no_caller(tmp_path, monkeypatch):
    """`from pkg import ops` in many files that use other functions of it:
    only those that spell `ops.angle` call `angle`, so the six-file limit on
    callers read is not spent on the others, and the cache watches them all."""
    from nanlint.analysis import project

    users = {f"pkg/u{i}.py": "from pkg import ops\n\n\ndef f(a, b):\n    return ops.ratio(a, b)\n" for i in range(8)}
    users["pkg/frames.py"] = "from pkg import ops\n\n\ndef colinear(e1, e2, thr):\n    return ops.angle(e1, e2) < thr\n"
    package(tmp_path, {"pkg/__init__.py": "", "pkg/ops.py": OPS, **users})
    monkeypatch.setattr(project, "_IMPORTERS", {})
    found = project.callers(str(tmp_path / "pkg/ops.py"), "angle", str(tmp_path))
    assert [c[0] for c in found] == [str(tmp_path / "pkg/frames.py")]
    args = ("check", "--output-format", "json", ".")
    assert [f for f in findings(run(*args, cwd=tmp_path)) if f[2] == "NL105"] == []
    # an importer starts using the angle in a loss: the cached result must go
    (tmp_path / "pkg/u3.py").write_text("from pkg import ops\n\n\ndef f(a, b):\n    return ops.angle(a, b).mean()\n")
    assert [f for f in findings(run(*args, cwd=tmp_path)) if f[2] == "NL105"] == [("pkg/ops.py", 10, "NL105")]


SIMCLR = (
    "import torch\n\n\ndef nce(out, temperature):\n"
    "    sim = torch.exp(torch.mm(out, out.t()) / temperature)\n    return sim.sum(-1).log().mean()\n"
)


@pytest.mark.parametrize("train, confidence", [
    # AMP only: CUDA autocast computes exp in float32
    ("import torch\n\n\ndef step(model, x):\n    with torch.autocast('cuda'):\n        loss = model(x)\n"
     "    loss.backward()\n", "medium"),
    ("import torch\n\n\ndef step(model, x):\n    if x.dtype == torch.float16:\n        x = x.float()\n"
     "    model(x).backward()\n", "medium"),
    # look-alikes: the model is run in pure half somewhere in the project
    ("def step(model, x):\n    model.half()\n    model(x).backward()\n", "high"),
    ("import torch\n\n\ndef load(cls, path):\n    return cls.from_pretrained(path, torch_dtype=torch.float16)\n", "high"),
    ("ds_config = {'fp16': {'enabled': True}}\n", "high"),
])
def test_an_exp_autocast_computes_in_float32_needs_a_model_cast_to_half(tmp_path, train, confidence):
    """SimCLR's exp of similarities: float16 only where something runs the model in pure half."""
    package(tmp_path, {"pkg/__init__.py": "", "pkg/losses.py": SIMCLR, "pkg/train.py": train})
    proc = run("check", "--no-cache", "--min-confidence", "medium", "--output-format", "json", ".", cwd=tmp_path)
    assert proc.returncode in (0, 1), proc.stderr
    found = [f for f in json.loads(proc.stdout) if f["code"] == "NL002"]
    assert [f["confidence"] for f in found] == [confidence]
    assert ("casts a model to half" in found[0]["message"]) == (confidence == "medium")


def test_a_half_cast_added_elsewhere_invalidates_the_cached_finding(tmp_path):
    package(tmp_path, {"pkg/__init__.py": "", "pkg/losses.py": SIMCLR,
                       "pkg/train.py": "def step(model, x):\n    model(x).backward()\n"})
    args = ("check", "--output-format", "json", ".")
    assert [f for f in findings(run(*args, cwd=tmp_path)) if f[2] == "NL002"] == []
    (tmp_path / "pkg/train.py").write_text("def step(model, x):\n    model.half()(x).backward()\n")
    assert [f for f in findings(run(*args, cwd=tmp_path)) if f[2] == "NL002"] == [("pkg/losses.py", 5, "NL002")]


CLAMPED = "import torch\n\n\ndef bound(logits):\n    return logits.clamp(-1e6, 1e6).softmax(-1)\n"
FLOAT32_STEP = "def step(model, x):\n    model(x).sum().backward()\n"


@pytest.mark.parametrize("extra, confidence", [
    ({}, "medium"),
    # autocast makes linear/matmul outputs float16: a clamp to 1e6 raises on them
    ({"pkg/amp.py": "import torch\n\n\ndef step(model, x):\n    with torch.autocast('cuda'):\n        return model(x)\n"},
     "high"),
    ({"pkg/amp.py": "import torch\n\nscaler = torch.cuda.amp.GradScaler()\n"}, "high"),
    ({"pkg/fit.py": "import lightning as L\n\ntrainer = L.Trainer(precision='16-mixed')\n"}, "high"),
    ({"pkg/args.py": "from transformers import TrainingArguments\n\nargs = TrainingArguments('out', fp16=True)\n"},
     "high"),
    ({"pkg/cli.py": "import argparse\n\np = argparse.ArgumentParser()\np.add_argument('--amp', action='store_true')\n"},
     "high"),
    ({"pkg/run.py": "def run(model, x):\n    return model.half()(x)\n"}, "high"),
    # switches given on the command line
    ({"pkg/train_hf.py": "from transformers import HfArgumentParser, TrainingArguments\n\n"
                         "args, = HfArgumentParser(TrainingArguments).parse_args_into_dataclasses()\n"}, "high"),
    ({"pkg/cli.py": "from lightning.pytorch.cli import LightningCLI\n\nLightningCLI()\n"}, "high"),
    # the setting lives in a configuration file
    ({"conf/train.yaml": "trainer:\n  precision: 16-mixed\n"}, "high"),
    ({"ds_config.json": '{"bf16": {"enabled": true}}\n'}, "high"),
    # look-alikes that run nothing in reduced precision
    ({"pkg/amp.py": "import torch\n\n\ndef f(model, x):\n    with torch.autocast('cuda', enabled=False):\n"
                    "        return model(x.float())\n"}, "medium"),
    ({"conf/train.yaml": "trainer:\n  precision: 32\n  max_epochs: 16\n"}, "medium"),
    # a test's half tensors say what the test checks, not how the project runs
    ({"tests/test_vis.py": "import torch\n\n\ndef test_vis():\n    w = torch.randn(4, dtype=torch.float16)\n"},
     "medium"),
])
def test_a_float16_overflow_needs_something_in_the_project_to_run_in_reduced_precision(tmp_path, extra, confidence):
    """A clamp to 1e6 raises on a float16 tensor: in a project where nothing runs in
    float16 or bfloat16 (no half cast, no autocast, no mixed-precision setting in
    code or configuration) only a user's own float16 run reaches it."""
    package(tmp_path, {"pkg/__init__.py": "", "pkg/model.py": CLAMPED, "pkg/train.py": FLOAT32_STEP, **extra})
    proc = run("check", "--no-cache", "--min-confidence", "medium", "--output-format", "json", ".", cwd=tmp_path)
    found = [f for f in json.loads(proc.stdout) if f["code"] == "NL108"]
    assert [f["confidence"] for f in found] == [confidence, confidence]
    assert all(("nothing in this project runs in reduced precision" in f["message"]) == (confidence == "medium")
               for f in found)


def test_an_autocast_added_elsewhere_invalidates_the_cached_finding(tmp_path):
    package(tmp_path, {"pkg/__init__.py": "", "pkg/model.py": CLAMPED, "pkg/train.py": FLOAT32_STEP})
    args = ("check", "--output-format", "json", ".")
    assert [f for f in findings(run(*args, cwd=tmp_path)) if f[2] == "NL108"] == []
    (tmp_path / "pkg/train.py").write_text(
        "import torch\n\n\ndef step(model, x):\n    with torch.autocast('cuda'):\n        model(x).sum().backward()\n")
    assert [f for f in findings(run(*args, cwd=tmp_path)) if f[2] == "NL108"] == [
        ("pkg/model.py", 5, "NL108"), ("pkg/model.py", 5, "NL108")]


@pytest.mark.parametrize("path, extra, confidence", [
    ("pkg/data/transforms.py", "", "medium"),
    ("pkg/preprocessing.py", "", "medium"),
    # look-alikes: model code; a data module that casts to half itself; metrics read a model's outputs
    ("pkg/model.py", "", "high"),
    ("pkg/data/transforms.py", "\n\ndef to_half(x):\n    return x.half()\n", "high"),
    ("pkg/metrics/scores.py", "", "high"),
])
def test_a_float16_overflow_in_data_pipeline_code_is_medium(tmp_path, path, extra, confidence):
    """Data-pipeline tensors come from the data in float32: a model's half cast elsewhere
    in the project does not reach them."""
    package(tmp_path, {"pkg/__init__.py": "", path: CLAMPED + extra, "pkg/train.py": TRAIN_HALF})
    proc = run("check", "--no-cache", "--min-confidence", "medium", "--output-format", "json", ".", cwd=tmp_path)
    found = [f for f in json.loads(proc.stdout) if f["code"] == "NL108"]
    assert [f["confidence"] for f in found] == [confidence, confidence]
    assert all(("data-pipeline code" in f["message"]) == (confidence == "medium") for f in found)


SINC_OPS = "import torch\n\n\ndef sinc(t):\n    return torch.where(t == 0, torch.tensor(1.0), torch.sin(t) / t)\n"


@pytest.mark.parametrize("caller, shown", [
    ("import math\nimport torch\nfrom pkg.ops import sinc\n\n\ndef kernel(n):\n"
     "    t = torch.linspace(-n, n, 2 * n) * math.pi\n    return sinc(t)\n", []),
    # look-alike: the caller hands its input, which carries a gradient, to the helper
    ("from pkg.ops import sinc\n\n\ndef layer(x):\n    return sinc(x)\n", [("pkg/ops.py", 5, "NL109")]),
])
def test_a_public_helper_that_every_caller_gives_a_fresh_tensor_carries_no_gradient(tmp_path, caller, shown):
    package(tmp_path, {"pkg/__init__.py": "", "pkg/ops.py": SINC_OPS, "pkg/resample.py": caller})
    args = ("check", "--output-format", "json", ".")
    assert findings(run(*args, cwd=tmp_path)) == shown
    if not shown:
        # the caller changes: the cached answer for ops.py must not survive it
        (tmp_path / "pkg/resample.py").write_text(
            "from pkg.ops import sinc\n\n\ndef layer(x):\n    return sinc(x)\n")
        assert findings(run(*args, cwd=tmp_path)) == [("pkg/ops.py", 5, "NL109")]


@pytest.mark.parametrize("expr, extra, confidence", [
    ("torch.log(torch.sigmoid(x))", {}, "medium"),
    ("torch.log(torch.softmax(x, -1))", {}, "medium"),
    ("torch.log(torch.sigmoid(x))", {"pkg/train.py": TRAIN_HALF}, "high"),
    # float32 rounds sigmoid(x) to 1 from x >= 16.64: a float32 hazard too
    ("torch.log(1 - torch.sigmoid(x))", {}, "high"),
])
def test_a_log_of_a_probability_is_a_float16_hazard(tmp_path, expr, extra, confidence):
    """Float32 underflows a sigmoid only below -88.73 (a softmax for a logit gap of 103.98)."""
    model = f"import torch\n\n\ndef nll(x):\n    return -{expr}.mean()\n"
    package(tmp_path, {"pkg/__init__.py": "", "pkg/model.py": model, **extra})
    proc = run("check", "--no-cache", "--min-confidence", "medium", "--output-format", "json", ".", cwd=tmp_path)
    assert [f["confidence"] for f in json.loads(proc.stdout) if f["code"] == "NL101"] == [confidence]


AMP_TRAIN = ("import torch\nfrom app.model import Net\n\n\ndef step(x):\n    with torch.autocast('cuda'):\n"
             "        Net()(x).sum().backward()\n\n\nif __name__ == '__main__':\n    step(torch.randn(2))\n")
BASELINE_MAIN = ("import torch\nfrom layers import bound\n\n\ndef main(model, x):\n"
                 "    bound(model(x)).sum().backward()\n\n\nif __name__ == '__main__':\n    main(torch.nn.Linear(8, 8), None)\n")


@pytest.mark.parametrize("extra, confidence", [
    ({}, "medium"),
    # look-alikes: the baseline's program imports a module that runs autocast; a notebook or a
    # configuration file runs something in reduced precision (neither tied to a program);
    # nothing imports the layers (library code: its users are not all here)
    ({"baseline/main.py": BASELINE_MAIN.replace("import torch\n", "import torch\nimport amp_utils\n"),
      "baseline/amp_utils.py": "import torch\n\nscaler = torch.cuda.amp.GradScaler()\n"}, "high"),
    ({"demo.ipynb": '{"cells": [{"source": ["with torch.autocast(\\"cuda\\"):\\n"]}]}'}, "high"),
    ({"baseline/config.yaml": "precision: 16-mixed\n"}, "high"),
    ({"baseline/main.py": "print('no model here')\n"}, "high"),
])
def test_a_float16_overflow_needs_the_programs_that_run_it_to_use_reduced_precision(tmp_path, extra, confidence):
    """A baseline vendored into a repository that trains its own model under autocast:
    the baseline's own program trains in float32, so its float16 overflow needs a user's own
    half run; what the other program does says nothing of it."""
    files = {"app/__init__.py": "", "app/model.py": "import torch\n\n\nclass Net(torch.nn.Module):\n    pass\n",
             "app/train.py": AMP_TRAIN, "baseline/layers.py": CLAMPED, "baseline/main.py": BASELINE_MAIN}
    package(tmp_path, {**files, **extra})
    proc = run("check", "--no-cache", "--min-confidence", "medium", "--output-format", "json", ".", cwd=tmp_path)
    found = [f for f in json.loads(proc.stdout) if f["code"] == "NL108"]
    assert [f["confidence"] for f in found] == [confidence, confidence]
    assert all(("the programs that run this code" in f["message"]) == (confidence == "medium") for f in found)


def test_an_autocast_added_to_the_program_that_runs_it_invalidates_the_cached_finding(tmp_path):
    package(tmp_path, {"app/__init__.py": "", "app/train.py": AMP_TRAIN, "baseline/layers.py": CLAMPED,
                       "baseline/main.py": BASELINE_MAIN})
    args = ("check", "--output-format", "json", ".")
    assert [f for f in findings(run(*args, cwd=tmp_path)) if f[2] == "NL108"] == []
    (tmp_path / "baseline/main.py").write_text(BASELINE_MAIN.replace(
        "    bound(", "    with torch.autocast('cuda'):\n        bound("))
    assert [f for f in findings(run(*args, cwd=tmp_path)) if f[2] == "NL108"] == [
        ("baseline/layers.py", 5, "NL108"), ("baseline/layers.py", 5, "NL108")]


@pytest.mark.parametrize("other, shown", [
    ("", []),
    # look-alike: another module imports the private helper and hands it a value with a gradient
    ("from pkg.ops import _project\n\n\ndef layer(w):\n    return _project(w)\n", [("pkg/ops.py", 5, "NL109")]),
])
def test_a_private_helper_another_module_imports_is_not_only_called_here(tmp_path, other, shown):
    """A private name is a convention: torchmetrics imports its ``_safe_divide`` everywhere."""
    ops = ("import torch\n\n\ndef _project(q, eps=1e-5):\n    return torch.where(q.norm() <= eps, q, q / q.norm())\n\n\n"
           "def update(w):\n    with torch.no_grad():\n        w.copy_(_project(w))\n")
    package(tmp_path, {"pkg/__init__.py": "", "pkg/ops.py": ops, **({"pkg/layer.py": other} if other else {})})
    assert findings(run("check", "--no-cache", "--output-format", "json", ".", cwd=tmp_path)) == shown


@pytest.mark.parametrize("extra, confidence", [
    ({}, "low"),
    # look-alikes: the package imports it; a config names it (a registry's custom_imports);
    # the package imports its modules by computed names; it is a program
    ({"pkg/losses/__init__.py": "from .match_loss import bound\n"}, "high"),
    ({"configs/seg.py": "custom_imports = dict(imports=['pkg.losses.match_loss'])\n"}, "high"),
    ({"pkg/losses/__init__.py": "import importlib\nfor m in ('focal', 'dice'):\n"
                                "    importlib.import_module(f'.{m}', __name__)\n"}, "high"),
    ({"pkg/losses/match_loss.py": CLAMPED + "\n\nif __name__ == '__main__':\n    bound(torch.randn(4).half())\n"},
     "high"),
    # the package exports nothing of its own (an empty __init__: no sign it left the module out)
    ({"pkg/losses/__init__.py": ""}, "high"),
    # an installable library's users import its modules one by one; a README names it
    ({"pyproject.toml": "[project]\nname = 'pkg'\n"}, "high"),
    ({"README.md": "from pkg.losses.match_loss import bound\n"}, "high"),
])
def test_a_module_nothing_imports_or_names_is_dead_code(tmp_path, extra, confidence):
    """A loss module kept beside the one its package exports runs nowhere in the project."""
    files = {"pkg/__init__.py": "", "pkg/losses/__init__.py": "from .match_cost import cost\n",
             "pkg/losses/match_cost.py": "def cost(x):\n    return x\n",
             "pkg/losses/match_loss.py": CLAMPED, "pkg/train.py": TRAIN_HALF}
    package(tmp_path, {**files, **extra})
    proc = run("check", "--no-cache", "--min-confidence", "low", "--output-format", "json", ".", cwd=tmp_path)
    found = [f for f in json.loads(proc.stdout) if f["code"] == "NL108"]
    assert [f["confidence"] for f in found] == [confidence, confidence]
    assert all(("nothing in this project imports or names" in f["message"]) == (confidence == "low") for f in found)


ALPHAS = ("import torch\n\n\nclass Field(torch.nn.Module):\n"
          "    def forward(self, x, far):\n        return self.alphas(x, dist_far=far[..., None])\n\n"
          "    def alphas(self, x, dist_far=None):\n        if dist_far is None:\n"
          "            dist_far = torch.empty_like(x).fill_(1e10)\n        return x * dist_far\n")


@pytest.mark.parametrize("extra, confidence", [
    ({}, "low"),
    # look-alikes: a call leaves the default; another file names the method (a caller
    # elsewhere, or a config); the project is an installable library, whose users call it
    ({"pkg/field.py": ALPHAS.replace("return x * dist_far\n", "return x * dist_far\n\n"
                                     "    def sample(self, x):\n        return self.alphas(x)\n")}, "high"),
    ({"pkg/render.py": "def render(field, x):\n    return field.alphas(x, None)\n"}, "high"),
    ({"configs/field.yaml": "hook: pkg.field.Field.alphas\n"}, "high"),
    ({"pyproject.toml": "[project]\nname = 'pkg'\n"}, "high"),
])
def test_a_branch_no_call_of_an_application_method_takes_is_dead_code(tmp_path, extra, confidence):
    """``if dist_far is None:`` when the only call passes a tensor: its fill never runs."""
    files = {"pkg/__init__.py": "from .field import Field\n", "pkg/field.py": ALPHAS, "pkg/train.py": TRAIN_HALF}
    package(tmp_path, {**files, **extra})
    proc = run("check", "--no-cache", "--min-confidence", "low", "--output-format", "json", ".", cwd=tmp_path)
    found = [f for f in json.loads(proc.stdout) if f["code"] == "NL108"]
    assert [f["confidence"] for f in found] == [confidence]
    assert ("no call takes: every call of `alphas` passes a value other than None for `dist_far`"
            in found[0]["message"]) == (confidence == "low")


TOP_K = ("import torch\n\n\ndef top_k(logits, k):\n    if k == 0:\n        return logits\n"
         "    return torch.where(logits < logits.max(), torch.ones_like(logits) * -1e9, logits)\n")


@pytest.mark.parametrize("sampler, confidence", [
    ("def sample(logits):\n    return top_k(logits, 0)\n", "low"),
    # followed through the caller's own parameter and its default (callers in the same module)
    ("def sample(logits, k=0):\n    return top_k(logits, k=k)\n\n\ndef run(x):\n    return sample(x)\n", "low"),
    # look-alikes: a call keeps 5 tokens; a call passes a value this reading does not know;
    # a caller's default is 0 but one of its callers passes 5
    ("def sample(logits):\n    return top_k(logits, 0) + top_k(logits, 5)\n", "high"),
    ("def sample(logits, cfg):\n    return top_k(logits, cfg.k)\n", "high"),
    ("def sample(logits, k=0):\n    return top_k(logits, k)\n\n\ndef run(x):\n    return sample(x, 5)\n", "high"),
])
@pytest.mark.parametrize("where", ["pkg/ops.py", "pkg/sample.py"])
def test_code_after_a_guard_every_call_takes_is_dead_code(tmp_path, sampler, confidence, where):
    """``if k == 0: return logits`` when every call passes ``k=0``: the top-k fill never runs.
    A caller in another module is read, but not that caller's own callers (one level of
    callers is followed across modules): its parameter is then unknown."""
    files = {"pkg/__init__.py": "", "pkg/ops.py": TOP_K, "pkg/train.py": TRAIN_HALF}
    files[where] = (TOP_K + "\n\n" if where == "pkg/ops.py" else "from .ops import top_k\n\n\n") + sampler
    package(tmp_path, files)
    if where == "pkg/sample.py" and "k=0" in sampler:
        confidence = "high"
    proc = run("check", "--no-cache", "--min-confidence", "low", "--output-format", "json", ".", cwd=tmp_path)
    found = [f for f in json.loads(proc.stdout) if f["code"] == "NL108"]
    assert [f["confidence"] for f in found] == [confidence]
    assert ("every call of `top_k` passes 0 for `k`" in found[0]["message"]) == (confidence == "low")


@pytest.mark.parametrize("test, given, expected", [
    ("k == 0", [0, 0.0], True),
    ("0 < k", [0], False),
    ("k > 0 and flag", [0], False),
    ("k > 0 or flag", [0], None),  # flag is unknown
    ("not k", [0], True),
    ("k", [0, 1], None),  # the calls disagree
    ("k is None", ["some"], False),
    ("k is not None", ["some"], True),
    ("k == 0", ["some"], None),  # a value that is not None may still be 0
    ("k < 'a'", [1], None),  # no order between them
    ("k == j", [0], None),  # two parameters: no constant to compare with
])
def test_the_test_of_a_branch_is_decided_by_what_every_call_passes(test, given, expected):
    import libcst as cst
    from nanlint.analysis.values import _SOME, _always

    values = {"k": [_SOME if v == "some" else v for v in given]}
    assert _always(cst.parse_expression(test), lambda name: values.get(name.value)) is expected


def test_a_star_import_of_a_project_module_brings_its_library_aliases(tmp_path):
    """`from nerf.utils import *` brings the `F` that `nerf/utils.py` imports: `F.softmax` is
    torch's, and the cached finding goes when that module stops importing `F`."""
    package(tmp_path, {"nerf/utils.py": "import torch\nimport torch.nn.functional as F\n",
                       "main.py": "from nerf.utils import *\n\n\ndef loss(x):\n    return F.softmax(x.half(), -1).log().mean()\n"})
    args = ("check", "--output-format", "json", ".")
    assert findings(run(*args, cwd=tmp_path)) == [("main.py", 5, "NL101")]
    # look-alike: the module no longer imports F, so `F` is nothing nanlint knows
    (tmp_path / "nerf/utils.py").write_text("import torch\n")
    assert findings(run(*args, cwd=tmp_path)) == []


SWEEPING_BLOCK = (
    "from torch import nn\nfrom pkg.experts import Experts\n\n\nclass Block(nn.Module):\n"
    "    def __init__(self, n):\n        super().__init__()\n        self.mlp = Experts(n)\n"
    "        for _, param in self.mlp.named_parameters():\n            nn.init.normal_(param, std=0.006)\n"
)
BLOCK_THAT_FREEZES = SWEEPING_BLOCK.replace("nn.init.normal_(param, std=0.006)", "param.requires_grad_(False)")


def test_a_module_of_the_project_that_initialises_a_child_parameter_by_parameter(tmp_path):
    """InternEvo-style: the experts' ``torch.empty`` weights are filled by the
    block that builds them, in another module, one parameter at a time. The
    finding is low, and high again (also on a warm run) once that loop only
    freezes the parameters; a loop in a module that does not import the
    experts' module does not count."""
    package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/experts.py": "import torch\nfrom torch import nn\n\n\nclass Experts(nn.Module):\n"
                          "    def __init__(self, n):\n        super().__init__()\n"
                          "        self.w1 = nn.Parameter(torch.empty(n, n))\n",
        "pkg/block.py": SWEEPING_BLOCK,
    })
    low = run("check", "--min-confidence", "low", "--output-format", "json", ".", cwd=tmp_path)
    (finding,) = json.loads(low.stdout)
    assert finding["confidence"] == "low" and "pkg/block.py:9" in finding["message"]
    assert findings(run("check", "--output-format", "json", ".", cwd=tmp_path)) == []
    (tmp_path / "pkg/block.py").write_text(BLOCK_THAT_FREEZES)
    assert findings(run("check", "--output-format", "json", ".", cwd=tmp_path)) == [("pkg/experts.py", 8, "NL110")]
    # a loop in a part of the project that never imports the experts says nothing about them
    package(tmp_path, {"pkg/asr.py": SWEEPING_BLOCK.replace("from pkg.experts import Experts", "from torch.nn import Linear as Experts")})
    assert findings(run("check", "--output-format", "json", ".", cwd=tmp_path)) == [("pkg/experts.py", 8, "NL110")]


def test_a_dtype_constant_imported_from_another_module(tmp_path):
    """nequip-style: every tensor of the data is made with ``dtype=_GLOBAL_DTYPE``,
    a module constant of another module bound to ``torch.float64``; 1e5 is
    no float16 literal there. Changing the constant to float16 shows it,
    also on a warm run."""
    package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/global_dtype.py": "import torch\n\n_GLOBAL_DTYPE = torch.float64\n",
        "pkg/cell.py": "import torch\nfrom pkg.global_dtype import _GLOBAL_DTYPE\n\n\n"
                       "def large_cell():\n    return 1e5 * torch.eye(3, dtype=_GLOBAL_DTYPE)\n",
    })
    assert findings(run("check", "--min-confidence", "low", "--output-format", "json", ".", cwd=tmp_path)) == []
    (tmp_path / "pkg/global_dtype.py").write_text("import torch\n\n_GLOBAL_DTYPE = torch.float16\n")
    assert findings(run("check", "--output-format", "json", ".", cwd=tmp_path)) == [("pkg/cell.py", 6, "NL108")]


BCE_HEAD = (
    "import torch\nimport torch.nn.functional as F\n\n\ndef loss(logits, y):\n"
    "    return F.binary_cross_entropy(torch.sigmoid(logits), y)\n"
)


@pytest.mark.parametrize("train, confidence", [
    # mixed precision only: CUDA autocast refuses binary_cross_entropy, so it runs in float32
    ("import torch\n\n\ndef step(model, x):\n    with torch.autocast('cuda'):\n        return model(x)\n", "medium"),
    # a custom op's inputs cast to half under autocast is mixed precision, not a half model
    # (OpenPCDet's `@custom_fwd(cast_inputs=torch.float16)`)
    ("import torch\n\n\nclass Op(torch.autograd.Function):\n    @staticmethod\n"
     "    @torch.cuda.amp.custom_fwd(cast_inputs=torch.float16)\n    def forward(ctx, x):\n        return x\n\n\n"
     "def step(model, x):\n    with torch.autocast('cuda'):\n        return Op.apply(model(x))\n", "medium"),
    # a model run in pure half reaches the float16 saturation
    ("def step(model, x):\n    model.half()\n    return model(x)\n", "high"),
    ("import torch\n\n\ndef step(model, x):\n    return model.to(dtype=torch.float16)(x)\n", "high"),
])
def test_bce_on_a_sigmoid_under_autocast_only(tmp_path, train, confidence):
    package(tmp_path, {"pkg/__init__.py": "", "pkg/loss.py": BCE_HEAD, "pkg/train.py": train})
    proc = run("check", "--no-cache", "--min-confidence", "low", "--output-format", "json", ".", cwd=tmp_path)
    found = [f for f in json.loads(proc.stdout) if f["code"] == "NL107"]
    assert [(f["path"], f["confidence"]) for f in found] == [("pkg/loss.py", confidence)]
    assert ("CUDA autocast refuses" in found[0]["message"]) == (confidence == "medium")


LOSSES = ("import torch\n\n\ndef kl_loss(p, q):\n    return (p * torch.log(torch.sigmoid(q))).sum()\n\n\n"
          "def dice_loss(p, q):\n    return 1 - 2 * (p * q).sum() / (p + q).sum()\n")


@pytest.mark.parametrize("extra, confidence", [
    ({}, "low"),
    # look-alikes: another module uses it; a config or a launch script or the README names it;
    # nothing imports the module at all (a script of unknown use); the project is a library;
    # its own file uses it; it is looked up by name in its own file
    ({"train2.py": "from utils.losses import kl_loss\n"}, "high"),
    ({"configs/run.yaml": "loss: kl_loss\n"}, "high"),
    ({"run.sh": "python train.py --loss kl_loss\n"}, "high"),
    ({"README.md": "`losses.kl_loss` is the KL term\n"}, "high"),
    ({"train.py": "def step(model, x):\n    model.half()(x.half()).sum().backward()\n"}, "high"),
    ({"pyproject.toml": "[project]\nname = 'utils'\n"}, "high"),
    ({"utils/losses.py": LOSSES + "\n\nLOSS = kl_loss\n"}, "high"),
    ({"utils/losses.py": LOSSES + "\n\ndef get(name):\n    return globals()[name]\n"}, "high"),
])
def test_a_definition_nothing_in_the_project_names_is_dead_code(tmp_path, extra, confidence):
    """A training script imports the losses module and uses `dice_loss`; `kl_loss` beside it is
    named nowhere else in the project: its hazard runs nowhere (low, and the message says so)."""
    files = {"utils/__init__.py": "", "utils/losses.py": LOSSES,
             "train.py": "from utils import losses\n\n\ndef step(model, x, y):\n"
                         "    model.half()\n    return losses.dice_loss(model(x), y)\n"}
    package(tmp_path, {**files, **extra})
    proc = run("check", "--no-cache", "--min-confidence", "low", "--output-format", "json", ".", cwd=tmp_path)
    found = [f for f in json.loads(proc.stdout) if f["code"] == "NL101"]
    assert [(f["line"], f["confidence"]) for f in found] == [(5, confidence)]
    assert ("`kl_loss`, which nothing else in this project names" in found[0]["message"]) == (confidence == "low")


def test_a_new_use_of_an_unused_definition_invalidates_the_cached_finding(tmp_path):
    """The warm run must see the definition come into use in another module."""
    package(tmp_path, {"utils/__init__.py": "", "utils/losses.py": LOSSES,
                       "train.py": "from utils import losses\n\n\ndef step(model, x, y):\n"
                                   "    model.half()\n    return losses.dice_loss(model(x), y)\n"})
    cache = ["--cache-dir", str(tmp_path / ".cache")]
    assert findings(run("check", *cache, "--output-format", "json", ".", cwd=tmp_path)) == []
    (tmp_path / "train.py").write_text("from utils import losses\n\n\ndef step(model, x, y):\n"
                                       "    model.half()\n    return losses.kl_loss(model(x), y)\n")
    assert findings(run("check", *cache, "--output-format", "json", ".", cwd=tmp_path)) == [
        ("utils/losses.py", 5, "NL101")]
