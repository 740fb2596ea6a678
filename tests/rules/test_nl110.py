"""NL110: the numbers its docs and messages quote, re-measured with torch, and the
deterministic-mode NaN fill that `nanlint confirm` relies on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from nanlint.dtypes import BFLOAT16, FLOAT16

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import lint  # noqa: E402

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("facts, dtype", [(FLOAT16, torch.float16), (BFLOAT16, torch.bfloat16)])
def test_nonfinite_fraction_of_bit_patterns(facts, dtype):
    # every 16-bit pattern once: the fraction the rule's message computes from eps
    patterns = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(dtype)
    fraction = (~torch.isfinite(patterns)).float().mean().item()
    assert fraction == pytest.approx(2 / facts.eps / 65536)


def test_deterministic_mode_fills_uninitialised_memory_with_nan():
    previous = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        assert torch.utils.deterministic.fill_uninitialized_memory
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            assert torch.isnan(torch.nn.Parameter(torch.empty(3, 4, dtype=dtype))).all()
        assert torch.isnan(torch.Tensor(3, 4)).all()
        assert torch.isnan(torch.FloatTensor(2, 2)).all()
        assert torch.isnan(torch.empty_like(torch.zeros(5))).all()
        linear = torch.nn.utils.skip_init(torch.nn.Linear, 4, 4)
        assert torch.isnan(linear.weight).all()
        meta = torch.nn.Linear(4, 4, device="meta").to_empty(device="cpu")
        assert torch.isnan(meta.weight).all()
    finally:
        torch.use_deterministic_algorithms(previous)


def test_skip_init_defers_initialisation_so_it_is_low():
    source = (
        "import torch\n"
        "from torch.nn.utils import skip_init\n"
        "class FFN(torch.nn.Module):\n"
        "    def __init__(self, d):\n"
        "        super().__init__()\n"
        "        self.w_1 = skip_init(torch.nn.Linear, d, 4 * d)\n"
        "        self.gamma = torch.nn.Parameter(torch.empty(d))\n"
    )
    found = {f.line: f for f in lint(source, ["NL110"])}
    assert sorted(found) == [6, 7]
    # skip_init says "initialised elsewhere": a builder's loop or a checkpoint this file cannot see
    assert found[6].confidence == "low" and "defers initialisation on purpose" in found[6].message
    # torch.empty says nothing of the kind
    assert found[7].confidence == "high"


def test_a_parameter_a_conversion_constructor_replaces_is_low():
    """QAT-style ``from_float``: ``m = cls(...); m.bias = float_module.bias``.
    Only a direct construction keeps the garbage: low, not high."""
    def module(convert):
        return (
            "import torch\nfrom torch import nn\n"
            "class Other(nn.Module):\n    pass\n"
            "class LinearBn(nn.Linear):\n"
            "    def __init__(self, i, o):\n"
            "        nn.Linear.__init__(self, i, o)\n"
            "        self.bias = nn.Parameter(torch.empty(o))\n"
            "    @classmethod\n"
            "    def from_float(cls, mod):\n"
            f"{convert}"
            "        return m\n"
        )
    def confidence(convert):
        return [f.confidence for f in lint(module(convert), ["NL110"])]
    assert confidence("        m = cls(mod.in_features, mod.out_features)\n        m.bias = mod.bias\n") == ["low"]
    assert confidence("        m = LinearBn(mod.in_features, mod.out_features)\n        m.bias = mod.bias\n") == ["low"]
    # look-alikes: another attribute replaced, another class's instance
    assert confidence("        m = cls(mod.in_features, mod.out_features)\n        m.weight = mod.weight\n") == ["high"]
    assert confidence("        m = Other()\n        m.bias = mod.bias\n") == ["high"]


def test_an_initialiser_held_by_a_config_initialises_its_argument():
    """Megatron: ``self.w = config.init_method(self.w)`` after a
    ``torch.empty`` parameter; a non-initialiser method of the config does not."""
    def confidence(call):
        source = (
            "import torch\nfrom torch import nn\n"
            "class Attention(nn.Module):\n"
            "    def __init__(self, config, n):\n"
            "        super().__init__()\n"
            "        self.register_parameter('offset', nn.Parameter(torch.empty(n)))\n"
            f"        self.offset = {call}\n"
        )
        return [f.confidence for f in lint(source, ["NL110"])]
    assert confidence("config.init_method(self.offset)") == []
    assert confidence("config.output_layer_init_method(self.offset)") == []
    assert confidence("config.transform(self.offset)") == ["high"]


def test_a_loader_given_a_state_dict_fills_what_it_allocates():
    """DeepSpeed's tensor-parallel loader: a meta tensor is replaced by an
    ``empty_like`` parameter, then copied from the checkpoint the function
    was given. The same allocation in a function given no checkpoint is a finding."""
    def found(params):
        source = (
            "import torch\n"
            f"def load(module, {params}, prefix):\n"
            "    module.weight = torch.nn.Parameter(torch.empty_like(module.weight.data, device='cpu'))\n"
            "    module.weight = copy_slice(module.weight.data, source[prefix + 'weight'])\n"
        )
        return [f.line for f in lint(source, ["NL110"])]
    assert found("state_dict") == [] and found("checkpoint") == []
    assert found("source") == [3]


@pytest.mark.parametrize("path, cls, confidence", [
    ("ops/inference/moe.py", "MoEMLP", "low"),
    ("layers/moe_inference.py", "MoEMLP", "low"),
    ("layers/moe.py", "MoEInferenceMLP", "low"),
    # look-alikes: nothing says inference
    ("layers/moe.py", "MoEMLP", "high"),
])
def test_an_inference_module_holds_a_trained_models_weights(path, cls, confidence):
    source = (
        "import torch\nfrom torch import nn\n"
        f"class {cls}(nn.Module):\n"
        "    def __init__(self, d):\n"
        "        super().__init__()\n"
        "        self.inter_w = nn.Parameter(torch.Tensor(d, 4 * d))\n"
    )
    found = lint(source, ["NL110"], path=path)
    assert [f.confidence for f in found] == [confidence]
    assert ("an inference module" in found[0].message) == (confidence == "low")


def test_a_conversion_constructor_that_assigns_after_to_empty_is_low():
    """optimum-quanto's ``from_module``: a quantized twin is built on the meta
    device, moved with ``to_empty``, then handed the source module's weight and
    bias. Only what it leaves unassigned keeps the garbage: low, not high."""
    def found(after):
        source = (
            "import torch\n"
            "def from_module(cls, module):\n"
            "    q = cls(module.in_features, module.out_features, device='meta')\n"
            "    q = q.to_empty(device=module.weight.device)\n"
            f"{after}"
            "    return q\n"
        )
        return [(f.line, f.confidence) for f in lint(source, ["NL110"])]
    assert found("    q.weight = module.weight\n    q.bias = module.bias\n") == [(4, "low")]
    # look-alikes: nothing assigned, or another module's attribute
    assert found("") == [(4, "high")]
    assert found("    module.weight = module.weight\n") == [(4, "high")]


LAYERS = (
    "import torch\nfrom torch import nn\n"
    "class Mix(nn.Module):\n"
    "    def __init__(self, d):\n"
    "        super().__init__()\n"
    "        self.x_k = nn.Parameter(torch.empty(1, 1, d))\n"
    "class Model(nn.Module):\n"
    "    def __init__(self, d):\n"
    "        super().__init__()\n"
    "        self.blocks = nn.ModuleList([Mix(d) for _ in range(4)])\n"
)


@pytest.mark.parametrize("script, confidence", [
    # RWKV-style inference demo: the model is built and loaded at module level
    ("sd = torch.load('w.pth')\nwith torch.no_grad():\n    model = Model(8).to(torch.half).cuda()\n"
     "    model.load_state_dict(sd, strict=False)\n", "low"),
    ("def main(path):\n    model = Model(8)\n    model.load_state_dict(torch.load(path))\n    return model\n", "low"),
    # built, cast and returned by a builder that every caller loads (a benchmark's loader)
    ("def build(d, device):\n    model = Model(d)\n    model = model.to(torch.float16).to(device)\n"
     "    return model, None\n"
     "def load(path, device):\n    model, _ = build(8, device)\n    model.load_state_dict(torch.load(path))\n"
     "    return model\n", "low"),
    ("def build(d):\n    return_value = Model(d)\n    return return_value\n"
     "def load(path):\n    net = build(8)\n    net.load_state_dict(torch.load(path))\n", "low"),
    # look-alikes: the model is trained from scratch; another model is loaded;
    # one of two constructions is loaded; one caller of the builder trains it
    ("def build(d):\n    model = Model(d)\n    return model\n"
     "def load(path):\n    net = build(8)\n    net.load_state_dict(torch.load(path))\n"
     "def train():\n    net = build(8)\n    return torch.optim.AdamW(net.parameters())\n", "high"),
    ("def build(d):\n    model = Model(d)\n    return model, model.state_dict()\n"
     "def load(path):\n    _, sd = build(8)\n    other = Model(8)\n    other.load_state_dict(sd)\n", "high"),
    ("model = Model(8)\nopt = torch.optim.AdamW(model.parameters())\n", "high"),
    ("model = Model(8)\nteacher = Model(8)\nteacher.load_state_dict(torch.load('t.pth'))\n", "high"),
    ("model = Model(8).cuda()\nother = nn.Linear(2, 2)\nother.load_state_dict(torch.load('t.pth'))\n", "high"),
])
def test_layers_of_a_model_the_file_builds_and_loads_hold_the_checkpoint(script, confidence):
    found = lint(LAYERS + script, ["NL110"])
    assert [f.confidence for f in found] == [confidence]
    assert ("load_state_dict" in found[0].message.split("; ", 1)[-1]) == (confidence == "low")


FUSE = (
    "import torch\nfrom torch import nn\n"
    "class LinearBN(nn.Module):\n"
    "    @torch.no_grad()\n"
    "    def fuse(self):\n"
    "        w = self.linear.weight * self.bn.weight[:, None]\n"
    "        b = self.bn.bias - self.bn.running_mean * self.bn.weight\n"
    "        bias = nn.Parameter(torch.empty(self.linear.out_features))\n"
    "        {register}\n"
    "        self.linear.weight.data.copy_(w)\n"
    "        {fill}\n"
    "        return self.linear\n"
)


@pytest.mark.parametrize("register, fill, reported", [
    ("self.linear.register_parameter('bias', bias)", "self.linear.bias.data.copy_(b)", False),
    ("setattr(self.linear, 'bias', bias)", "self.linear.bias.copy_(b)", False),
    # look-alikes: the copy fills another layer's bias; the local is registered under another name
    ("self.linear.register_parameter('bias', bias)", "self.proj.bias.data.copy_(b)", True),
    ("self.linear.register_parameter('shift', bias)", "self.linear.bias.data.copy_(b)", True),
])
def test_a_local_registered_on_a_child_and_filled_through_it_is_initialised(register, fill, reported):
    """A fused linear+batch-norm layer: its new bias is filled through the child it is registered on."""
    source = FUSE.replace("{register}", register).replace("{fill}", fill)
    assert bool(lint(source, ["NL110"])) == reported


@pytest.mark.parametrize("store, confidence", [
    # FSDP's param_init_fn (verl): materialise each existing parameter on the device
    ("module._parameters[name] = nn.Parameter(torch.empty_like(param.data, device=device))", "low"),
    ("module._parameters[name] = shared.setdefault(param, nn.Parameter(torch.empty_like(param.data)))", "low"),
    # look-alikes: a new parameter registered under a new name, or kept in a local dict
    ("module.register_parameter(name + '_copy', nn.Parameter(torch.empty_like(param.data)))", "high"),
    ("shared[name] = nn.Parameter(torch.empty_like(param.data))", "high"),
])
def test_a_parameter_stored_over_an_existing_one_is_materialised_for_a_later_fill(store, confidence):
    src = ("import torch\nfrom torch import nn\n\n\ndef get_init_fn(device):\n    shared = {}\n\n"
           "    def init_fn(module):\n        for name, param in module.named_parameters(recurse=False):\n"
           f"            {store}\n\n    return init_fn\n")
    found = lint(src, ["NL110"])
    assert [f.confidence for f in found] == [confidence]
    assert ("stored over a module's existing parameter" in found[0].message) == (confidence == "low")


@pytest.mark.parametrize("method, confidence", [
    # adapters' LoRA layers: `copy_from` adopts the wrapped layer's bias
    ("    def copy_from(self, module):\n        self.weight = module.weight\n        self.bias = module.bias\n", "low"),
    # look-alikes: the method adopts another attribute; it points the bias at the layer's own tensor
    ("    def copy_from(self, module):\n        self.weight = module.weight\n", "high"),
    ("    def tie(self):\n        self.bias = self.shared\n", "high"),
])
def test_a_method_that_adopts_another_modules_tensor_replaces_the_parameter(method, confidence):
    src = ("import torch\nfrom torch import nn\n\n\nclass LoRALinear(nn.Linear):\n"
           "    def __init__(self, i, o, no_init_bias=False):\n        super().__init__(i, o, bias=not no_init_bias)\n"
           "        if no_init_bias:\n            self.bias = nn.Parameter(torch.empty(o))\n\n" + method)
    found = lint(src, ["NL110"])
    assert [f.confidence for f in found] == [confidence]
    assert ("points `self.bias` at another module's tensor" in found[0].message) == (confidence == "low")
