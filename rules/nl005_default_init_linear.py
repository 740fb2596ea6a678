from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Set, Tuple

import libcst as cst

from nanlint.dtypes import fmt
from nanlint.finding import UNSAFE
from nanlint.patterns import last_name, name_chain, arg, is_reference
from nanlint.rule import FixSpec, Invalid, Rule, Valid

LINEAR_NAMES = frozenset({"torch.nn.Linear", "torch.nn.modules.Linear", "torch.nn.modules.linear.Linear"})

#: methods that, by convention, initialise a module's parameters
INIT_METHODS = frozenset(
    {
        "reset_parameters", "_reset_parameters", "reset_params", "_reset_params",
        "init_weights", "_init_weights", "init_weight", "_init_weight",
        "initialize_weights", "_initialize_weights", "init_parameters", "_init_parameters",
        "init_params", "_init_params", "initialize_parameters", "_initialize_parameters",
        "weights_init", "_weights_init", "post_init",
    }
)

#: calls that walk every submodule or parameter
ITERATORS = frozenset({"modules", "named_modules", "children", "named_children", "parameters", "named_parameters"})

#: in-place methods that do not set values
_NOT_INIT = frozenset({"requires_grad_", "share_memory_", "retain_grad_", "register_hook_"})

#: attribute names that are not the layer itself in `self.fc.weight.data`
_NOT_OWNERS = frozenset({"self", "weight", "bias", "data", "cls"})


@dataclass
class _Frame:
    """What one function (or the module level) does."""

    name: Optional[str] = None
    in_class: Optional[cst.ClassDef] = None
    init_op: bool = False  # runs an initialiser (nn.init.*, weight.normal_(), ...)
    linear_check: bool = False  # isinstance(m, nn.Linear), "Linear" in a class name test
    iterates: bool = False  # walks self.modules()/parameters()
    self_refs: Set[str] = field(default_factory=set)


@dataclass
class _Layer:
    call: cst.Call
    cls: cst.ClassDef
    owner: Optional[str]  # `fc` for `self.fc = nn.Linear(...)`, `layers` for `self.layers = nn.ModuleList([...])`
    stmt: Optional[cst.SimpleStatementLine]  # the statement to insert after, when fixable
    target: Optional[str]  # `self.fc`, when fixable


class DefaultInitLinear(Rule):
    """
    ## What it does
    Flags an `nn.Linear(...)` created in an `nn.Module` subclass when nothing in
    the file initialises it explicitly. Explicit initialisation is any of:
    an `nn.init.*` call or an in-place `.weight`/`.bias` method
    (`self.fc.weight.data.normal_(0, 0.02)`, `.zero_()`, `.copy_()`) or an
    assignment to its `.weight` (weight tying) naming the layer; a
    `reset_parameters` / `_init_weights` / `init_weights` (and similar) method of
    the class that mentions the layer or walks `self.modules()` /
    `self.parameters()`; any function that initialises after an
    `isinstance(m, nn.Linear)` test or while walking modules or parameters; an
    `.apply(init_fn)` anywhere in the file; an inherited init hook called on the
    class (`self.post_init()`, `self.init_weights()` defined elsewhere). The
    names `nn.Linear`, `torch.nn.Linear` and `Linear` are resolved through the
    file's imports.

    This rule is **opt-in** (`--select NL005`, `--extend-select NL005` or
    `ALL`).

    ## Why is this bad?
    Usually it is not, which is why the rule is opt-in. PyTorch's default
    (`kaiming_uniform_` with `a=sqrt(5)`: weights uniform in
    ±1/sqrt(in_features), bias likewise) gives each layer an output variance of
    about a third of its input's, so a plain stack *shrinks* activations. The
    float16 concern is elsewhere: deep residual stacks add every block's output
    to the stream, wide layers and attention logits grow with the fan-in, and
    nothing about the default was chosen for a range that ends at 65504. An
    activation that reaches 65504 becomes `inf`, and the next normalisation or
    softmax turns it into NaN. Teams that train in float16 often want every
    layer's initial scale to be a deliberate, reviewed choice (Xavier,
    small-std normal, zero-init of residual projections): this rule finds the
    layers where no one made that choice.

    ## Example
    ```python
    class MLP(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.fc = nn.Linear(d, 4 * d)
    ```

    ## Use instead
    ```python
    class MLP(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.fc = nn.Linear(d, 4 * d)
            nn.init.xavier_uniform_(self.fc.weight)
            nn.init.zeros_(self.fc.bias)
    ```

    ## Fix safety
    Unsafe: it changes the initial weights, hence training. The fix adds
    `nn.init.xavier_uniform_(<layer>.weight)` and, unless `bias=False`,
    `nn.init.zeros_(<layer>.bias)` (guarded by `is not None` when `bias=` is
    not a literal) right after the statement that creates the layer, written
    with the file's alias for `torch.nn` (or `torch.nn.init`). It is offered
    only when the `nn.Linear(...)` is assigned on its own line to a plain name
    or attribute (`self.fc = nn.Linear(...)`); a layer inside `nn.Sequential`
    or a list comprehension is reported without a fix.
    """

    code = "NL005"
    name = "default-init-linear"
    summary = "nn.Linear left at PyTorch's default init with no explicit initialisation in the file (opt-in)"
    default_enabled = False
    fix_applicability = UNSAFE
    triggers = ("Linear",)
    valid = [
        Valid(
            """
            import torch.nn as nn
            class MLP(nn.Module):
                def __init__(self, d):
                    super().__init__()
                    self.fc = nn.Linear(d, d)
                    nn.init.xavier_uniform_(self.fc.weight)
            """
        ),
        Valid(
            """
            from torch import nn
            class Block(nn.Module):
                def __init__(self, d):
                    super().__init__()
                    self.proj = nn.Linear(d, d)
                    self.apply(self._init_weights)

                def _init_weights(self, module):
                    if isinstance(module, nn.Linear):
                        module.weight.data.normal_(mean=0.0, std=0.02)
            """
        ),
        Valid(
            """
            import torch
            class Head(torch.nn.Module):
                def __init__(self, d, n):
                    super().__init__()
                    self.out = torch.nn.Linear(d, n)
                    self.reset_parameters()

                def reset_parameters(self):
                    torch.nn.init.zeros_(self.out.weight)
            """
        ),
        Valid(
            """
            import torch.nn as nn
            def make_mlp(d):
                return nn.Sequential(nn.Linear(d, d), nn.ReLU())
            class Config:
                def build(self):
                    return nn.Linear(4, 4)
            """
        ),
        Valid(
            """
            import torch.nn as nn
            class LM(nn.Module):
                def __init__(self, v, d):
                    super().__init__()
                    self.embed = nn.Embedding(v, d)
                    self.lm_head = nn.Linear(d, v, bias=False)
                    self.lm_head.weight = self.embed.weight
            """
        ),
    ]
    invalid = [
        Invalid(
            """
            import torch.nn as nn
            class MLP(nn.Module):
                def __init__(self, d):
                    super().__init__()
                    self.fc = nn.Linear(d, 4 * d)
                    self.out = nn.Linear(4 * d, d, bias=False)
            """,
            fixed="""
            import torch.nn as nn
            class MLP(nn.Module):
                def __init__(self, d):
                    super().__init__()
                    self.fc = nn.Linear(d, 4 * d)
                    nn.init.xavier_uniform_(self.fc.weight)
                    nn.init.zeros_(self.fc.bias)
                    self.out = nn.Linear(4 * d, d, bias=False)
                    nn.init.xavier_uniform_(self.out.weight)
            """,
            count=2,
        ),
        Invalid(
            """
            import torch
            from torch.nn import Linear, Module
            class Probe(Module):
                def __init__(self, d, use_bias):
                    super().__init__()
                    self.head = Linear(d, 1, bias=use_bias)
            """,
            fixed="""
            import torch
            from torch.nn import Linear, Module
            class Probe(Module):
                def __init__(self, d, use_bias):
                    super().__init__()
                    self.head = Linear(d, 1, bias=use_bias)
                    torch.nn.init.xavier_uniform_(self.head.weight)
                    if self.head.bias is not None: torch.nn.init.zeros_(self.head.bias)
            """,
        ),
        Invalid(
            """
            from torch import nn
            class FFN(nn.Module):
                def __init__(self, d):
                    super().__init__()
                    self.net = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
            """,
            count=2,
        ),
    ]

    def __init__(self, ctx, options=None) -> None:
        super().__init__(ctx, options)
        self.off = "Linear" not in ctx.source
        self.frames: List[_Frame] = [_Frame()]
        #: enclosing classes: (node, is an nn.Module subclass, number of frames when entered)
        self.classes: List[Tuple[cst.ClassDef, bool, int]] = []
        self.module_classes: Set[str] = set()
        self.pretrained: Set[str] = set()  # transformers model classes imported from modeling_* files
        self.assigns: List[cst.CSTNode] = []
        self.line: Optional[cst.SimpleStatementLine] = None
        self.layers: List[_Layer] = []
        self.covered_names: Set[str] = set()
        self.covered_classes: Set[cst.ClassDef] = set()
        self.file_wide = False
        self.init_functions: Set[str] = set()
        self.applied: List[str] = []  # names passed to .apply(...)
        self.defined: Set[Tuple[cst.ClassDef, str]] = set()
        self.hooks_called: List[Tuple[cst.ClassDef, str]] = []

    # -- structure -----------------------------------------------------------
    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        is_module = any(self._module_base(b.value) for b in node.bases)
        if any(
            (last_name(b.value) or "").endswith("PreTrainedModel") or last_name(b.value) in self.pretrained
            for b in node.bases
        ):
            # transformers: post_init() runs _init_weights over every submodule of the model
            self.file_wide = True
        if is_module:
            self.module_classes.add(node.name.value)
        self.classes.append((node, is_module, len(self.frames)))

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        # `from ..mistral.modeling_mistral import MistralModel`: a transformers model,
        # initialised by its PreTrainedModel's _init_weights
        if self.off or not node.relative or node.module is None or isinstance(node.names, cst.ImportStar):
            return
        module = last_name(node.module) or ""
        if not module.startswith("modeling_") or module in ("modeling_utils", "modeling_outputs", "modeling_layers"):
            return
        for alias in node.names:
            name = last_name(alias.name)
            if name is not None and (name.endswith("Model") or "For" in name):
                self.pretrained.add(name)

    def leave_ClassDef(self, node: cst.ClassDef) -> None:
        self.classes.pop()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        # a method: no function lies between it and the innermost class
        owner = self.classes[-1][0] if self.classes and self.classes[-1][2] == len(self.frames) else None
        if owner is not None:
            self.defined.add((owner, node.name.value))
        self.frames.append(_Frame(name=node.name.value, in_class=owner))

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        frame = self.frames.pop()
        self._close(frame)

    def leave_Module(self, node: cst.Module) -> None:
        self._close(self.frames[0])
        if self.off or not self.layers:
            return
        for cls, hook in self.hooks_called:
            if (cls, hook) not in self.defined:
                self.file_wide = True  # an inherited init hook (transformers' post_init)
        if any("init" in name.lower() or name in self.init_functions for name in self.applied):
            self.file_wide = True
        if self.file_wide:
            return
        for layer in self.layers:
            if layer.cls in self.covered_classes:
                continue
            if layer.owner is not None and layer.owner in self.covered_names:
                continue
            self.report(layer.call, self._message(layer.call), self._fix(layer))

    def _close(self, frame: _Frame) -> None:
        if frame.init_op and frame.name is not None:
            self.init_functions.add(frame.name)
        if frame.init_op and (frame.linear_check or frame.iterates):
            self.file_wide = True
        if frame.in_class is not None and frame.name in INIT_METHODS:
            if frame.iterates or frame.linear_check:
                self.covered_classes.add(frame.in_class)
            self.covered_names |= frame.self_refs

    # -- statements ------------------------------------------------------------
    def visit_SimpleStatementLine(self, node: cst.SimpleStatementLine) -> None:
        self.line = node

    def leave_SimpleStatementLine(self, node: cst.SimpleStatementLine) -> None:
        self.line = None

    def visit_Assign(self, node: cst.Assign) -> None:
        self.assigns.append(node)
        if self.off:
            return
        for target in node.targets:
            self._weight_assign(target.target)

    def leave_Assign(self, node: cst.Assign) -> None:
        self.assigns.pop()

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self.assigns.append(node)

    def leave_AnnAssign(self, node: cst.AnnAssign) -> None:
        self.assigns.pop()

    def visit_Attribute(self, node: cst.Attribute) -> None:
        if self.off:
            return
        if isinstance(node.value, cst.Name) and node.value.value == "self":
            self.frames[-1].self_refs.add(node.attr.value)

    def visit_SimpleString(self, node: cst.SimpleString) -> None:
        if not self.off and "Linear" in node.value:
            self.frames[-1].linear_check = True  # classname.find("Linear") != -1

    # -- calls -------------------------------------------------------------------
    def visit_Call(self, node: cst.Call) -> None:
        if self.off:
            return
        frame = self.frames[-1]
        qualified = self.ctx.resolve(node.func)
        last = last_name(node.func)
        if qualified in LINEAR_NAMES:
            self._linear(node)
            return
        if last is None:
            return
        if qualified is not None and qualified.startswith("torch.nn.init."):
            frame.init_op = True
            for a in node.args:
                self.covered_names |= _owners(a.value)
            return
        if last == "isinstance" and len(node.args) == 2:
            if _names_linear(self.ctx, node.args[1].value):
                frame.linear_check = True
            return
        receiver = node.func.value if isinstance(node.func, cst.Attribute) else None
        if last in ITERATORS and receiver is not None:
            frame.iterates = True
            return
        if last == "apply" and receiver is not None and len(node.args) == 1:
            target = node.args[0].value
            if isinstance(target, cst.Call) and target.args:  # partial(init_fn, ...)
                target = target.args[0].value
            name = last_name(target)
            if name is not None:
                self.applied.append(name)
            elif isinstance(target, cst.Lambda):
                self.applied.append("lambda_init" if "init" in self.ctx.code(target) else "lambda")
            return
        if last in INIT_METHODS and frame.name in INIT_METHODS:
            self.file_wide = True  # an init hook delegating to its parent's (super()._init_weights(m))
        if last in INIT_METHODS and receiver is not None:
            if isinstance(receiver, cst.Name) and receiver.value == "self" and self.classes:
                self.hooks_called.append((self.classes[-1][0], last))
            else:
                self.covered_names |= _owners(receiver)  # self.fc.reset_parameters()
            frame.init_op = True
            return
        in_place = last.endswith("_") and not last.endswith("__") and last not in _NOT_INIT
        if in_place and receiver is not None and _touches_params(receiver):
            frame.init_op = True  # self.fc.weight.data.normal_(0, 0.02)
            self.covered_names |= _owners(receiver)
            return
        if (in_place or "init" in last.lower()) and last != "__init__" and node.args:
            owners: Set[str] = set()
            for a in node.args:
                if in_place and not _touches_params(a.value):
                    continue
                owners |= _owners(a.value)
            if owners:
                frame.init_op = True  # trunc_normal_(m.weight), init_layer(self.fc)
                self.covered_names |= owners

    def _weight_assign(self, target: cst.BaseExpression) -> None:
        if isinstance(target, (cst.Tuple, cst.List)):  # linear.weight, linear.bias = fuse(...)
            for element in target.elements:
                self._weight_assign(element.value)
            return
        if _touches_params(target):  # self.lm_head.weight = self.embed.weight
            self.frames[-1].init_op = True
            self.covered_names |= _owners(target)

    def _linear(self, call: cst.Call) -> None:
        if not self.classes or not self.classes[-1][1]:
            return
        cls = self.classes[-1][0]
        owner = target = stmt = None
        assign = self.assigns[-1] if self.assigns else None
        if isinstance(assign, cst.Assign) and len(assign.targets) == 1:
            node = assign.targets[0].target
        elif isinstance(assign, cst.AnnAssign):
            node = assign.target
        else:
            node = None
        if node is not None:
            chain = name_chain(node, partial=True)  # self.gates[g] -> "gates"
            owner = chain[-1] if chain and chain[-1] not in _NOT_OWNERS else None
        if node is not None and is_reference(node):
            if assign.value is call and self.line is not None and len(self.line.body) == 1:
                target, stmt = self.ctx.code(node), self.line
        self.layers.append(_Layer(call, cls, owner, stmt, target))

    def _module_base(self, base: cst.BaseExpression) -> bool:
        if isinstance(base, cst.Call):
            return False
        qualified = self.ctx.resolve(base)
        name = last_name(base)
        if name is None:
            return False
        if qualified is not None:
            if qualified.startswith("torch.nn.") or qualified.startswith("torch.ao.nn."):
                return True
            if qualified.startswith("pydantic") or qualified.startswith("typing"):
                return False
        if name in self.module_classes:
            return True
        return name.endswith("Module") or name.endswith("Model") or name.endswith("Layer")

    # -- report ----------------------------------------------------------------------
    def _message(self, call: cst.Call) -> str:
        dtype = self.ctx.dtype
        text = " ".join(self.ctx.code(call).split())
        if len(text) > 50:
            text = text[:47] + "..."
        return (
            f"`{text}` keeps PyTorch's default init (weights uniform in ±1/sqrt(in_features)) "
            "and nothing in this file initialises it: its scale is nobody's choice, and activations "
            f"that grow through deep stacks overflow {dtype.name} at {fmt(dtype.max)}; "
            "initialise it explicitly (nn.init.xavier_uniform_, zeros_ for the bias)"
        )

    def _fix(self, layer: _Layer) -> Optional[FixSpec]:
        if layer.stmt is None or layer.target is None:
            return None
        init, imports = self._init_prefix()
        lines = [f"{init}.xavier_uniform_({layer.target}.weight)"]
        bias = arg(layer.call, 2, "bias")
        if bias is None or (isinstance(bias.value, cst.Name) and bias.value.value == "True"):
            lines.append(f"{init}.zeros_({layer.target}.bias)")
        elif isinstance(bias.value, cst.Name) and bias.value.value == "False":
            pass
        else:
            lines.append(f"if {layer.target}.bias is not None: {init}.zeros_({layer.target}.bias)")
        return FixSpec(
            UNSAFE,
            "Initialise the layer explicitly: xavier_uniform_ weight, zero bias",
            insert_after=[(layer.stmt, "\n".join(lines))],
            imports=imports,
        )

    def _init_prefix(self) -> Tuple[str, Tuple[str, ...]]:
        names = self.ctx.names
        nn = names.alias_for("torch.nn")
        if nn is not None:
            return f"{nn}.init", ()
        init = names.alias_for("torch.nn.init")
        if init is not None:
            return init, ()
        return f"{self.ctx.torch_name()}.nn.init", ("torch",)


# -- helpers -----------------------------------------------------------------------------


def _owners(node: cst.BaseExpression) -> Set[str]:
    """The layer names an initialiser's argument points at: {"blocks", "fc"} for
    `self.blocks[0].fc.weight`."""
    return {n for n in name_chain(node, partial=True) if n not in _NOT_OWNERS}


def _touches_params(node: cst.BaseExpression) -> bool:
    chain = name_chain(node, partial=True)
    return "weight" in chain or "bias" in chain


def _names_linear(ctx, node: cst.BaseExpression) -> bool:
    """`nn.Linear`, `(nn.Linear, nn.Conv2d)`, `Linear` in an isinstance test."""
    if isinstance(node, cst.Tuple):
        return any(_names_linear(ctx, e.value) for e in node.elements)
    name = last_name(node)
    return name is not None and "Linear" in name
