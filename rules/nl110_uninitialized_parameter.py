from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple

import libcst as cst

from nanlint.analysis.project import INIT_HOOK as _INIT_METHOD
from nanlint.finding import HIGH, LOW
from nanlint.dtypes import fmt
from nanlint.patterns import last_name, name_chain, arg, number
from nanlint.resolve import dotted_name
from nanlint.rule import Invalid, Rule, Valid

#: allocations whose memory is not written
_EMPTY_FUNCS = frozenset(
    {"torch.empty", "torch.empty_like", "torch.empty_strided", "torch.Tensor"}
)
#: legacy typed constructors: `torch.FloatTensor(n, m)` allocates without writing
_FLOAT_TENSOR_TYPES = frozenset(
    {"FloatTensor", "DoubleTensor", "HalfTensor", "BFloat16Tensor", "Tensor"}
)
_PARAMETER_NAMES = frozenset(
    {"torch.nn.Parameter", "torch.nn.parameter.Parameter", "torch.nn.modules.module.Parameter"}
)
#: dtypes whose garbage is never NaN or inf (integers, bool)
_INT_DTYPE = re.compile(r"(^|\.)(u?int\d*|long|short|int|bool|uint\d+|qint\d+|quint\w*)$")
#: dtypes of quantized checkpoint storage (a class holding them is filled by a loader)
_STORAGE_DTYPE = re.compile(r"u?int\d|qint|quint|fp8|float8|e4m3|e5m2|fp4|nf4|packed", re.IGNORECASE)

#: a function given one of these fills what it allocates from it (`def load(module, state_dict, prefix)`)
_CHECKPOINT_PARAMS = frozenset({"state_dict", "checkpoint", "ckpt"})
#: module containers: what they hold is unknown
_CONTAINERS = frozenset({"ModuleList", "ModuleDict", "Sequential", "ParameterList", "ParameterDict"})
#: calls that walk every submodule or parameter
_ITERATORS = frozenset(
    {"modules", "named_modules", "children", "named_children", "parameters", "named_parameters"}
)
#: in-place methods that do not set values
#: initialisers without `init` or a trailing `_` in their name (torch_geometric's
#: `inits.glorot(w)` / `inits.zeros(b)`, jax-style `kaiming_uniform(w)`), when they are not torch's
#: own (`torch.zeros(n)` makes a tensor)
_INIT_FUNCTIONS = frozenset({
    "glorot", "glorot_orthogonal", "xavier", "xavier_uniform", "xavier_normal", "kaiming_uniform",
    "kaiming_normal", "he_uniform", "he_normal", "lecun_normal", "lecun_uniform", "uniform", "normal",
    "zeros", "ones", "constant", "orthogonal", "trunc_normal", "variance_scaling",
})
_NOT_INIT = frozenset({"requires_grad_", "share_memory_", "retain_grad_", "register_hook_", "pin_memory_",
                       # in-place on the gradients, not the values
                       "clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_"})
#: methods on an allocation that neither read nor write its values
_PASS_THROUGH = frozenset(
    {"to", "cuda", "cpu", "float", "half", "double", "bfloat16", "type", "contiguous",
     "requires_grad_", "pin_memory", "view", "reshape", "t", "transpose", "permute",
     "squeeze", "unsqueeze", "share_memory_", "detach"}
)
#: loading weights into the module (counts only in the scope that created it)
_LOAD = re.compile(r"load_state_dict|load_checkpoint|load_model|set_model_state_dict|load_weights|^load$")
#: calls that may materialise/initialise a module created on the meta device
_MATERIALISE = re.compile(r"init|reset|load|materiali[sz]e|restore|set_\w*state_dict|copy_|apply|broadcast", re.IGNORECASE)


@dataclass
class _Frame:
    name: Optional[str] = None
    cls: Optional[str] = None  # the class of a method
    init_op: bool = False  # runs an initialiser
    iterates: bool = False  # walks .parameters()/.modules()
    loads: bool = False  # load_state_dict(...) in this scope
    local_inits: Set[str] = field(default_factory=set)
    empties: Dict[str, cst.Call] = field(default_factory=dict)  # w = torch.empty(...)
    loop_vars: Dict[str, List[List[str]]] = field(default_factory=dict)
    #: `ws = [self.a, self.b]`: the chains a local list or tuple holds
    local_lists: Dict[str, List[List[str]]] = field(default_factory=dict)
    meta: Set[str] = field(default_factory=set)  # names constructed on the meta device
    materialise_at: List[int] = field(default_factory=list)  # order of materialising calls
    init_method: bool = False  # a method named like an initialiser (reset_parameters, _init_weights...)
    generic: bool = False  # initialises whatever it finds: iterates, apply(), passes `self` on, calls a hook
    self_refs: Set[str] = field(default_factory=set)  # `x` of every `self.x` it mentions
    instances: Dict[str, str] = field(default_factory=dict)  # m = cls(...) / m = Net(...): the class built
    attr_sets: List[Tuple[str, str, int]] = field(default_factory=list)  # `m.weight = ...`: (m, weight, order)
    #: `mod.register_parameter("bias", b)`: ("mod", "bias") -> "b", the local it registers
    aliases: Dict[Tuple[str, ...], str] = field(default_factory=dict)


@dataclass
class _Creation:
    node: cst.CSTNode  # what is reported
    kind: str  # "empty" | "skip_init" | "to_empty"
    frame: _Frame
    cls: Optional[str]
    attr: Optional[str]  # self.<attr>
    local: Optional[str]  # a local name
    order: int
    what: str
    param: Optional[cst.Call] = None  # the nn.Parameter(...) call
    returned: bool = False  # flows out of its function: the caller initialises it, or not
    #: stored over a module's existing parameter (``module._parameters[name] = ...``)
    replaces: bool = False


class UninitializedParameter(Rule):
    """
    ## What it does
    Flags a parameter whose memory is allocated but never written:
    `nn.Parameter(torch.empty(...))` (also `torch.empty_like`,
    `torch.empty_strided`, `x.new_empty`, and the legacy size constructors
    `torch.Tensor(n, m)` / `torch.FloatTensor(n, m)` / `HalfTensor` /
    `DoubleTensor` -- but not `torch.Tensor([1.0, 2.0])`, which holds data),
    also through `self.register_parameter("w", nn.Parameter(...))` or a local
    `w = torch.empty(...)` later wrapped in `nn.Parameter(w)`; a module made by
    `torch.nn.utils.skip_init(...)`; and `module.to_empty(device=...)` on a
    module constructed with `device="meta"` (or under `with
    torch.device("meta")`), when nothing in the file initialises that tensor.

    Initialised means any of: `nn.init.*(self.w ...)` or another initialiser
    (`trunc_normal_(self.w)`, `init_fn(self.w)`, another library's
    `glorot(self.w)` / `zeros(self.b)`, as torch_geometric's `inits`), also
    wrapped around the parameter as it is made
    (`self.w = nn.init.kaiming_uniform_(nn.Parameter(torch.Tensor(n, d)))`:
    an initialiser returns the tensor it fills); an in-place call on it
    (`self.w.normal_()`, `.uniform_()`, `.zero_()`, `.fill_()`, `.copy_()`,
    `.data.xxx_()`, also under `torch.no_grad()`); an assignment
    `self.w.data = ...` or `self.w[...] = ...`; a loop that initialises every
    element of it (`for p in self.ws: nn.init.normal_(p)`), also by element
    (`self.ws.append(nn.Parameter(...))` then `nn.init.uniform_(self.ws[i])`),
    also over a local list (`for p in [self.U, self.V]: init(p[i])`); a layer
    whose only builders in the file are classes that sweep every parameter
    (`self.gnn = GNN(...)` in a model whose `_reset_parameters` walks
    `self.parameters()`); a
    `reset_parameters` / `_reset_parameters` / `init_weights` /
    `_init_weights` (and similar) method of the class or of a base class in
    the file -- the whole class when that method is generic (iterates
    `self.parameters()` / `self.modules()`, calls `self.apply(...)`, passes
    `self` to a helper, calls `super().reset_parameters()`), else the
    attributes it mentions; a base class in another module of the project
    (followed through imports, up to six classes deep) whose init hook
    walks every parameter or child (a framework's `Module.init_states`
    over `self.children()`); a function given a `state_dict` / `checkpoint`
    / `ckpt` (a loader fills what it allocates); a call of such a hook on `self` that the file does
    not define (inherited from elsewhere); any method that iterates
    `self.parameters()` / `self.modules()` and runs an initialiser; frozen or
    quantized storage (a class with a `requires_grad=False` or
    integer/float8-typed parameter, filled by a checkpoint loader); a file
    that builds modules on the meta device (`init_empty_weights()`,
    `device="meta"`: its modules are materialised by a loader, and the
    `to_empty()` check covers the case where nothing loads them). A file
    that defines `_init_weights` or subclasses `PreTrainedModel`
    (transformers: `post_init()` initialises every module) is initialised
    throughout. `load_state_dict` counts only in the scope that
    creates the tensor. After `to_empty`, only a later call in the same scope
    that initialises, resets, loads or applies something to the module
    counts (`to_empty` discards whatever the constructor did). Integer and
    bool `torch.empty` and zero-sized `torch.empty(0)` are not flagged, nor
    is a parameter or `skip_init` module that a function returns (a factory:
    its caller initialises it), nor a parameter made by a helper method of a
    class that has an init hook.

    ## Confidence
    **High**, except in a class whose weights come from a checkpoint
    (`nanlint.analysis.safeguards`: a transformers `*PreTrainedModel` or
    diffusers `ModelMixin` subclass, a class the file builds and then
    loads a state dict into -- `model = RWKV(args).cuda()` then
    `model.load_state_dict(sd)` in an inference script -- or a layer built
    only inside such classes in the file): **low**, since only a model trained from scratch
    keeps the memory as it was. `skip_init` is **low** too: it defers
    initialisation on purpose, usually to a model-level loop over
    `model.parameters()` in another module or to a checkpoint load, which a
    file's analysis cannot see (judged false for every such finding in a
    translation toolkit whose model builder initialises every parameter).
    A parameter that a conversion constructor of the file replaces on the
    instances it builds (`m = cls(...); m.bias = float_module.bias`, the QAT
    modules' `from_float`) is **low**: only a direct construction keeps it;
    so is a `to_empty()` after which the function assigns attributes of the
    module (`q.weight = module.weight`, optimum-quanto's `from_module`), and
    a parameter that a method of its class other than `__init__` points at
    another module's tensor (`def copy_from(self, m): self.bias = m.bias`,
    adapters' LoRA layers built with `no_init_bias`).
    So is a parameter of an inference module -- a class named `*Inference*`
    or a file or package named for inference (`ops/inference/`,
    `moe_inference.py`), a name heuristic: such a layer serves a model
    trained elsewhere, whose weights a loader copies in -- and one of an
    *inference release*: a project (the directory holding `.git`, else the
    highest one with a `pyproject.toml`, `setup.py` or `setup.cfg`, else
    the checked tree) whose Python files and notebooks load weights
    (`load_state_dict(`, `torch.load(`, `from_pretrained(`...) and never
    train (no `.backward(`, `torch.optim`, `zero_grad(`, `Trainer`,
    `training_step`...): a model's reference code and its loader, whose
    parameters only ever hold a checkpoint -- and one of a class that a
    module of the project patches over another library's class
    (`modeling_mixtral.MixtralExperts = LigerExperts`, or handed to a
    `*patch*(...)` function): that library builds the model and initialises
    or loads it; and a `weight` or `bias` parameter where a function of the
    project (below the file's top-level package) walks `model.modules()` and
    initialises `getattr(m, "weight")` on any module, whatever its class, or
    is a callback for `model.apply(...)` that does so to the one module it
    is given (`def init_func(m): if hasattr(m, 'bias'): init.constant_(m.bias, 0)`);
    and a parameter of a class that other modules of the project build
    (or of an installable library) where a module that imports the class's
    module (through at most four imports) runs an initialiser on every
    parameter of a module it holds, one by one
    (`for _, p in self.mlp.named_parameters(): normal_(std=0.006)(p)`,
    InternEvo's blocks over experts defined elsewhere; test files do not
    count). A parameter stored over a module's existing one
    (`module._parameters[name] = nn.Parameter(torch.empty_like(p))`) is
    **low** too: that materialises a parameter the model already defines,
    as FSDP's `param_init_fn` or a meta-device loader does, and the state
    dict or the `sync_module_states` broadcast that follows fills it. A
    wrapper that builds the model from a module it imports and loads it into
    its own attribute (`self._model = decoder.Model(cfg)` then
    `self._model.load_state_dict(sd)`) counts as a checkpoint's loader. The
    cached findings remember these facts and are recomputed when they change.

    ## Why is this bad?
    `torch.empty` returns whatever bytes were in that memory. Reinterpreted as
    float16, 2048 of the 65536 bit patterns (1/32, 3.1%: measured 3.117% NaN
    or inf over 10^7 random int16 values viewed as float16 with torch 2.13)
    have the exponent all ones and are NaN or inf; in bfloat16 it is 1/256
    (measured 0.39%); and another quarter of all float16 patterns (measured
    25.0%) are finite values above 255.9 in magnitude, whose square already
    overflows 65504. In practice the memory is often zeros (a fresh page) or
    stale data of an earlier allocation (`5.47e12` in a float32 `torch.empty`
    here, a previous layer's activations), so the bug is
    intermittent: a model that trains on one machine diverges on another.
    One NaN parameter poisons every output it touches and, through the
    optimizer, every other parameter.

    Under `torch.use_deterministic_algorithms(True)` PyTorch fills
    uninitialised memory with NaN (`torch.utils.deterministic.fill_uninitialized_memory`
    is True by default; verified with torch 2.13 for `torch.empty`,
    `empty_like`, `torch.Tensor(n, m)`, `torch.FloatTensor(n, m)`,
    `HalfTensor`, `skip_init` and `to_empty` after a meta construction: all
    NaN). `nanlint confirm` runs in that mode and reports the event
    `uninitialized` at the creation line.

    ## Example
    ```python
    class Scale(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.gamma = nn.Parameter(torch.empty(d))
    ```

    ## Use instead
    ```python
    class Scale(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.gamma = nn.Parameter(torch.ones(d))
            # or keep torch.empty and define reset_parameters():
            #     nn.init.ones_(self.gamma)
    ```

    ## Fix safety
    No automatic fix. The right initial value is a modelling decision
    (`ones` for a scale, `zeros` for a bias, Kaiming or Xavier for a weight,
    a checkpoint for a frozen layer), and a wrong guess silently changes
    training; the rule cannot see initialisation done by another file (a
    parent model's `_init_weights`, a training script's `load_state_dict`),
    where the finding should be suppressed with `# noqa: NL110`.
    """

    code = "NL110"
    name = "uninitialized-parameter"
    summary = "nn.Parameter(torch.empty(...)), skip_init or to_empty() never initialised in the file: garbage memory, NaN/inf"
    default_enabled = True
    fix_applicability = None
    triggers = (re.compile(r"\bParameter\b"), "skip_init", "to_empty")

    valid = [
        Valid(
            """
            import torch
            import torch.nn as nn
            class Linear(nn.Module):
                def __init__(self, i, o):
                    super().__init__()
                    self.weight = nn.Parameter(torch.empty(o, i))
                    self.reset_parameters()

                def reset_parameters(self):
                    nn.init.kaiming_uniform_(self.weight)
            """
        ),
        Valid(
            """
            import torch
            from torch import nn
            class Scale(nn.Module):
                def __init__(self, d):
                    super().__init__()
                    self.gamma = nn.Parameter(torch.empty(d))
                    nn.init.ones_(self.gamma)
                    self.table = nn.Parameter(torch.Tensor([1.0, 2.0]))
                    self.beta = nn.Parameter(torch.empty(d).normal_(0, 0.02))
            """
        ),
        Valid(
            """
            import torch
            import torch.nn as nn
            class Pos(nn.Module):
                def __init__(self, n, d):
                    super().__init__()
                    self.pos = nn.Parameter(torch.Tensor(n, d))
                    with torch.no_grad():
                        self.pos.copy_(sinusoid(n, d))
            """
        ),
        Valid(
            """
            import torch
            import torch.nn as nn
            class Quant(nn.Module):
                def __init__(self, o, i):
                    super().__init__()
                    self.qweight = nn.Parameter(torch.empty(o, i, dtype=torch.int8), requires_grad=False)
                    self.placeholder = nn.Parameter(torch.empty(0))
            """
        ),
        Valid(
            """
            import torch
            def build(cfg, sd):
                with torch.device("meta"):
                    model = Transformer(cfg)
                model.to_empty(device="cuda")
                model.load_state_dict(sd)
                return model
            """
        ),
        Valid(
            """
            import torch
            from torch.nn.utils import skip_init
            class Net(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc = skip_init(torch.nn.Linear, 10, 10)
                    torch.nn.init.orthogonal_(self.fc.weight)
            """
        ),
        Valid(
            """
            import torch
            from torch import nn
            class MyNorm(nn.Module):
                def __init__(self, d):
                    super().__init__()
                    self.weight = nn.Parameter(torch.empty(d))
            class MyPreTrainedModel(PreTrainedModel):
                def _init_weights(self, module):
                    if isinstance(module, MyNorm):
                        module.weight.data.fill_(1.0)
            """
        ),
        # an initialiser of another library (torch_geometric's inits), a list of parameters
        # initialised slice by slice, a child whose parent sweeps every parameter
        Valid(
            """
            import torch
            from torch.nn import Parameter
            from torch_geometric.nn.inits import glorot, zeros
            class GCLSTM(torch.nn.Module):
                def __init__(self, n, k):
                    super().__init__()
                    self.W_i = Parameter(torch.Tensor(n, k))
                    self.b_i = Parameter(torch.Tensor(1, k))
                    self.U = Parameter(torch.Tensor(3, n, k))
                    self.V = Parameter(torch.Tensor(3, n, k))
                    glorot(self.W_i)
                    zeros(self.b_i)
                    params = [self.U, self.V]
                    for para in params:
                        for i in range(3):
                            torch.nn.init.xavier_normal_(para[i])
            class GNN(torch.nn.Module):
                def __init__(self, n):
                    super().__init__()
                    self.w_ih = Parameter(torch.Tensor(3 * n, n))
            class SRGNN(torch.nn.Module):
                def __init__(self, n):
                    super().__init__()
                    self.gnn = GNN(n)
                    self._reset_parameters()
                def _reset_parameters(self):
                    for weight in self.parameters():
                        weight.data.uniform_(-0.1, 0.1)
            """
        ),
    ]
    invalid = [
        # look-alikes of the initialisers below: torch's own `zeros` makes a tensor, a child built
        # elsewhere too is not covered by its parent's sweep
        Invalid(
            """
            import torch
            from torch import nn, ones
            class Cell(nn.Module):
                def __init__(self, n):
                    super().__init__()
                    self.w = nn.Parameter(torch.Tensor(n, n))
            class Gate(nn.Module):
                def __init__(self, n):
                    super().__init__()
                    self.w = nn.Parameter(torch.empty(n))
                    self.keep = ones(self.w.shape)
            class Model(nn.Module):
                def __init__(self, n):
                    super().__init__()
                    self.cell = Cell(n)
                    for p in self.parameters():
                        p.data.uniform_(-0.1, 0.1)
            standalone = Cell(4)
            """,
            count=2,
        ),
        # clipping gradients touches .grad, not the values: no initialisation
        Invalid(
            """
            import torch
            import torch.nn as nn
            class Emb(nn.Module):
                def __init__(self, n, d):
                    super().__init__()
                    self.pos = nn.Parameter(torch.empty(n, d))
            def train(model):
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            """
        ),
        Invalid(
            """
            import torch
            from torch import nn
            class Mix(nn.Module):
                def __init__(self, ref):
                    super().__init__()
                    w = torch.empty_like(ref)
                    self.w = nn.Parameter(w)
                    self.bn = nn.BatchNorm1d(4)
                    self.bias = nn.Parameter(torch.empty(4))
                    nn.init.zeros_(self.bn.bias)
            """,
            count=2,
        ),
        Invalid(
            """
            import torch
            import torch.nn as nn
            class Scale(nn.Module):
                def __init__(self, d):
                    super().__init__()
                    self.gamma = nn.Parameter(torch.empty(d))
                    self.beta = nn.Parameter(torch.FloatTensor(d, 1))
            """,
            count=2,
        ),
        Invalid(
            """
            import torch
            class Gate(torch.nn.Module):
                def __init__(self, d):
                    super().__init__()
                    self.register_parameter("w", torch.nn.Parameter(torch.Tensor(d, d)))
            """
        ),
        Invalid(
            """
            import torch
            def build(cfg):
                with torch.device("meta"):
                    model = Transformer(cfg)
                model.to_empty(device="cuda")
                return model
            """
        ),
        Invalid(
            """
            import torch
            from torch.nn.utils import skip_init
            fc = skip_init(torch.nn.Linear, 10, 10)
            """
        ),
    ]

    def __init__(self, ctx, options=None) -> None:
        super().__init__(ctx, options)
        self.frames: List[_Frame] = [_Frame()]
        #: calls given straight to an initialiser (``nn.init.trunc_normal_(nn.Parameter(torch.empty(n)))``):
        #: the initialiser fills what they make, and returns it
        self.init_wrapped: Set[cst.Call] = set()
        #: enclosing classes: (name, number of frames when entered)
        self.classes: List[Tuple[str, int]] = []
        self.bases: Dict[str, List[str]] = {}
        #: class -> its bases as spelled (``protocols.Module``): to follow imported ones
        self.base_spellings: Dict[str, List[str]] = {}
        self.covered_classes: Set[str] = set()
        self._outside_uses: Dict[str, int] = {}
        self.class_local: Set[Tuple[Optional[str], str]] = set()
        #: attribute names initialised through a longer chain (`m.weight`, `self.fc.weight`):
        #: name -> {(class that did it, `fc` of `self.fc.weight`)}; None: any module (`m.weight`)
        self.foreign: Dict[str, Set[Optional[Tuple[Optional[str], Optional[str]]]]] = {}
        #: (class, child attribute) -> what `self.<child> = X(...)` constructs
        self.child_types: Dict[Tuple[Optional[str], str], str] = {}
        self.file_wide = False
        self.creations: List[_Creation] = []
        self.assigns: List[cst.CSTNode] = []
        self.meta_with = 0
        self.order = 0
        self.reported: Set[int] = set()
        #: register_parameter("w", ...) / setattr(self, "w", ...) calls: (call, name)
        self._registers: List[Tuple[cst.Call, str]] = []
        #: classes that hold frozen or quantized checkpoint storage
        self.storage_classes: Set[str] = set()
        #: the file builds modules on the meta device (or under accelerate's init_empty_weights)
        self.meta_file = False
        #: (class, method) defined in the file; (class, hook) called as self.hook()
        self.defined: Set[Tuple[str, str]] = set()
        self.hooks_called: List[Tuple[str, str]] = []
        self.defined_hooks: Set[Tuple[str, str]] = set()
        #: (class, attribute) assigned on an instance after construction (`m = cls(...); m.bias = other.bias`)
        self.replaced: Set[Tuple[str, str]] = set()
        #: (class, attribute) -> a method of the class (not ``__init__``) that points the
        #: attribute at another module's tensor (``def copy_from(self, m): self.bias = m.bias``)
        self.adopted: Dict[Tuple[str, str], str] = {}

    # -- structure -----------------------------------------------------------
    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        bases = [last_name(b.value) or "" for b in node.bases if b.keyword is None]
        self.bases[node.name.value] = bases
        self.base_spellings[node.name.value] = [dotted_name(b.value) or "" for b in node.bases if b.keyword is None]
        if any(b.endswith("PreTrainedModel") for b in bases):
            self.file_wide = True  # transformers: post_init() runs _init_weights on every module
        self.classes.append((node.name.value, len(self.frames)))

    def leave_ClassDef(self, node: cst.ClassDef) -> None:
        self.classes.pop()

    def _cls(self) -> Optional[str]:
        """The class of the current method (or of the class body)."""
        if not self.classes:
            return None
        frame = self.frames[-1]
        if frame.cls is not None:
            return frame.cls
        return None

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        owner = self.classes[-1][0] if self.classes and self.classes[-1][1] == len(self.frames) else None
        # a function nested in a method keeps the method's class (`self` is the same)
        if owner is None and self.frames[-1].cls is not None:
            owner = self.frames[-1].cls
        name = node.name.value
        if name == "_init_weights":
            self.file_wide = True  # transformers' PreTrainedModel hook
        method = owner is not None and bool(self.classes) and self.classes[-1][1] == len(self.frames)
        if method:
            self.defined.add((owner, name))
        init_method = method and name != "__init__" and bool(_INIT_METHOD.search(name))
        if init_method:
            self.defined_hooks.add((owner, name))
        frame = _Frame(name=name, cls=owner, init_method=init_method)
        # a loader: what it allocates, it fills from the checkpoint it is given
        frame.loads = any(p.name.value in _CHECKPOINT_PARAMS for p in _all_params(node.params))
        self.frames.append(frame)

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        frame = self.frames.pop()
        if frame.init_op and frame.iterates:
            if frame.cls is not None:
                self.covered_classes.add(frame.cls)
            else:
                self.file_wide = True  # a module-level sweep: for p in model.parameters(): init(p)
        if frame.init_method and frame.cls is not None:
            if frame.generic or frame.iterates:
                self.covered_classes.add(frame.cls)
            else:
                # reset_parameters() that names what it initialises: only those
                self.class_local |= {(frame.cls, ref) for ref in frame.self_refs}
        elif self.frames and frame.cls is not None and self.frames[-1].cls == frame.cls:
            # a function nested in a method: what it does, the method does
            outer = self.frames[-1]
            outer.generic |= frame.generic
            outer.self_refs |= frame.self_refs

    def leave_Module(self, node: cst.Module) -> None:
        frame = self.frames[0]
        if frame.init_op and frame.iterates:
            self.file_wide = True
        if not self.creations:
            return
        with_hooks = {cls for cls, _ in self.defined_hooks}
        for cls, hook in self.hooks_called:
            if not any((c, hook) in self.defined for c in self._lineage(cls)):
                self.covered_classes.add(cls)  # an inherited hook (defined in another file)
        covered = self._covered_classes()
        for c in self.creations:
            if id(c.node) in self.reported:
                continue
            if c.kind == "to_empty":
                if any(order > c.order for order in c.frame.materialise_at):
                    continue
            else:
                if self.file_wide or c.frame.loads or (self.meta_file and c.kind == "empty"):
                    continue
                if c.cls is not None and c.cls in self.storage_classes:
                    continue
                if c.cls is not None and c.cls in covered:
                    continue
                if c.attr is not None and (
                    any((k, c.attr) in self.class_local for k in self._lineage(c.cls)) or self._foreign(c)
                ):
                    continue
                if c.returned:
                    continue
                if c.attr is None and any(k in with_hooks for k in self._lineage(c.cls)):
                    continue  # made by a helper of a class that has an init hook
                if c.local is not None and c.local in c.frame.local_inits:
                    continue
            self.reported.add(id(c.node))
            cls_node = self.ctx.facts.scopes.enclosing_class(c.node)
            loaded = cls_node is not None and self.ctx.facts.safeguards.checkpoint_loaded(cls_node)
            # a checkpoint's loader fills it, unless the model is trained from scratch;
            # skip_init defers initialisation on purpose, to code this file does not show
            message = self._message(c)
            replaced = c.cls is not None and c.attr is not None and any(
                (k, c.attr) in self.replaced for k in self._lineage(c.cls))
            if replaced:
                message += (
                    f"; a constructor in this file replaces `{c.attr}` on the instances it builds "
                    "(`m = cls(...); m." + c.attr + " = ...`), so only a direct construction keeps the garbage"
                )
            if c.kind == "skip_init" and not loaded:
                message += (
                    "; skip_init defers initialisation on purpose, usually to a model-level loop over "
                    "parameters() or a checkpoint load elsewhere, which this file does not show"
                )
            adopter = next((self.adopted[(k, c.attr)] for k in self._lineage(c.cls)
                            if c.attr is not None and (k, c.attr) in self.adopted), None)
            if adopter is not None and not replaced:
                message += (
                    f"; `{adopter}` of the class points `self.{c.attr}` at another module's tensor "
                    f"(`self.{c.attr} = module.{c.attr}`), so only an instance it is never called on keeps the garbage"
                )
            low = loaded or replaced or c.kind == "skip_init" or c.replaces or adopter is not None
            if c.replaces:
                message += (
                    "; it is stored over a module's existing parameter (`module._parameters[name] = ...`), "
                    "materialising it as FSDP's `param_init_fn` or a meta-device loader does, for the state "
                    "dict or broadcast that follows to fill"
                )
            if loaded:
                message += (
                    "; the model that holds it takes its weights from a checkpoint (a pretrained-model class, "
                    "or a model the project builds and then gives `load_state_dict`), which fills it unless "
                    "the model is trained from scratch"
                )
            if c.kind == "to_empty" and c.local is not None:
                assigned = sorted({attr for name, attr, order in c.frame.attr_sets
                                   if name == c.local and order >= c.order})
                if assigned:
                    low = True
                    message += (
                        "; the function then assigns " + ", ".join(f"`{c.local}.{a}`" for a in assigned)
                        + ", as a conversion constructor does: only what it leaves unassigned keeps the garbage"
                    )
            if not low and self._inference_module(cls_node):
                low = True
                message += "; an inference module (`inference` in its name or path) holds a trained model's weights"
            if not low and c.attr is not None and self.ctx.project is not None \
                    and self.ctx.project.generically_initialised(c.attr):
                low = True
                message += (
                    f"; a function of this project initialises `{c.attr}` on every module it walks "
                    f"(`getattr(m, \"{c.attr}\")` in a loop over `modules()`), which may include this one"
                )
            if not low and cls_node is not None and self.ctx.project is not None and not self.ctx.test_code:
                # (test code is low anyway: the project scan is not worth its cost there)
                sweep = self.ctx.project.swept_parameters()
                if sweep and self.ctx.project.named_elsewhere(cls_node.name.value):
                    low = True
                    message += (
                        f"; other modules of this project build `{cls_node.name.value}`, and a module that "
                        f"imports this one initialises the modules it holds parameter by parameter "
                        f"(`for p in m.parameters(): init(p)`, {sweep}), which may cover this one"
                    )
            if not low and cls_node is not None and self.ctx.project is not None \
                    and self.ctx.project.patched_in(cls_node.name.value):
                low = True
                message += (
                    f"; `{cls_node.name.value}` is patched over another library's class, which builds "
                    "the model that holds it and initialises or loads its weights"
                )
            if not low and self.ctx.project is not None and self.ctx.project.inference_release():
                low = True
                message += (
                    "; this project loads trained weights and never trains a model (no optimizer, "
                    "no `backward()`), so a checkpoint fills it"
                )
            self.report(c.node, message, confidence=LOW if low else HIGH)

    def _inference_module(self, cls_node: Optional[cst.ClassDef]) -> bool:
        """A class named ``*Inference*`` or in a file or package named for
        inference (``ops/inference/``, ``moe_inference.py``): a layer that
        serves a model trained elsewhere, its weights copied in by a loader."""
        if cls_node is not None and "inference" in cls_node.name.value.lower():
            return True
        parts = re.split(r"[\\/]", self.ctx.path or "")
        return any("inference" in part.lower() for part in parts[-4:])

    def _foreign(self, c: _Creation) -> bool:
        """`weight` initialised as `m.weight` (any module), or as `self.child.weight` in
        another class (a parent initialising its children); `self.bn.bias` in the
        creating class itself is a child's bias, not this one."""
        for owner in self.foreign.get(c.attr or "", set()):
            if owner is None:
                return True
            cls, child = owner
            if cls == c.cls:
                continue
            built = self.child_types.get((cls, child)) if child is not None else None
            if built is None or built == c.cls:
                return True
            if not built.startswith("torch.") and built.rpartition(".")[2] == c.cls:
                return True
        return False

    def _lineage(self, cls: Optional[str]) -> List[Optional[str]]:
        """The class and its base classes defined in this file."""
        out: List[Optional[str]] = [cls]
        index = 0
        while index < len(out) and len(out) < 20:
            for base in self.bases.get(out[index] or "", []):
                if base in self.bases and base not in out:
                    out.append(base)
            index += 1
        return out

    def _covered_classes(self) -> Set[str]:
        covered = set(self.covered_classes)
        project = self.ctx.facts.project
        for name, spellings in self.base_spellings.items():
            # a base class of another project module whose init hook sweeps
            # every parameter (``Module.init_states`` over ``self.children()``)
            if any(base and base.rpartition(".")[2] not in self.bases and project.base_initialises(base)
                   for base in spellings):
                covered.add(name)
        changed = True
        while changed:
            changed = False
            for name, bases in self.bases.items():
                if name not in covered and any(b in covered for b in bases):
                    covered.add(name)
                    changed = True
            # a layer that only classes sweeping every parameter build, as a child
            # (`self.gnn = GNN(...)` in a model whose `_reset_parameters` walks `self.parameters()`)
            for name in self.bases:
                builders = [owner for (owner, _), built in self.child_types.items()
                            if built.rpartition(".")[2] == name]
                if name not in covered and builders and all(b in covered for b in builders) \
                        and self._uses_outside(name) == len(builders):
                    covered.add(name)
                    changed = True
        return covered

    def _uses_outside(self, name: str) -> int:
        """How often the file's code reads the class ``name`` outside its own body
        (``super(GNN, self)`` inside it does not count)."""
        if name not in self._outside_uses:
            scopes = self.ctx.facts.scopes
            count = 0
            for reads in scopes.reads.values():
                for read in reads.get(name, ()):
                    cls = scopes.enclosing_class(read)
                    while cls is not None and cls.name.value != name:
                        cls = scopes.enclosing_class(cls)
                    if cls is None:
                        count += 1
            self._outside_uses[name] = count
        return self._outside_uses[name]

    # -- statements ------------------------------------------------------------
    def visit_Assign(self, node: cst.Assign) -> None:
        self.assigns.append(node)
        if len(node.targets) == 1 and isinstance(node.targets[0].target, cst.Name):
            local = node.targets[0].target.value
            if isinstance(node.value, (cst.List, cst.Tuple)):
                self.frames[-1].local_lists[local] = _chains_in(node.value)
            else:
                self.frames[-1].local_lists.pop(local, None)
        if len(node.targets) == 1 and isinstance(node.value, cst.Call):
            chain = name_chain(node.targets[0].target)
            if len(chain) == 2 and chain[0] == "self" and isinstance(node.targets[0].target, cst.Attribute):
                built = self.ctx.resolve(node.value.func) or last_name(node.value.func)
                if built is not None and built.rpartition(".")[2] not in _CONTAINERS:
                    self.child_types[(self._cls(), chain[1])] = built
        for target in node.targets:
            self._assign_target(target.target)
        if len(node.targets) == 1 and isinstance(node.value, cst.Attribute):
            chain = name_chain(node.targets[0].target)
            frame = self.frames[-1]
            if len(chain) == 2 and chain[0] == "self" and frame.cls is not None and frame.name != "__init__" \
                    and name_chain(node.value)[:1] not in ([], ["self"]):
                # `self.bias = module.bias` in `copy_from`: the layer adopts another module's tensor
                self.adopted.setdefault((frame.cls, chain[1]), frame.name or "")
        if len(node.targets) == 1 and isinstance(node.value, cst.Name):
            chain = name_chain(node.targets[0].target)
            if len(chain) == 2 and chain[0] == "self":
                for c in self.creations:  # p = nn.Parameter(torch.empty(...)); self.p = p
                    if c.frame is self.frames[-1] and c.attr is None and c.local == node.value.value:
                        c.attr = chain[1]
        if len(node.targets) == 1 and isinstance(node.targets[0].target, cst.Name):
            name = node.targets[0].target.value
            frame = self.frames[-1]
            built = self._instance_of(node.value)
            if built is not None:
                frame.instances[name] = built
            alloc = self._alloc(node.value)
            if alloc is not None:
                frame.empties[name] = alloc
            else:
                frame.empties.pop(name, None)
            if self.meta_with or self._is_meta(node.value):
                frame.meta.add(name)
        elif len(node.targets) == 1 and self.meta_with:
            chain = name_chain(node.targets[0].target)
            if chain:
                self.frames[-1].meta.add(".".join(chain))

    def leave_Assign(self, node: cst.Assign) -> None:
        self.assigns.pop()

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self.assigns.append(node)

    def leave_AnnAssign(self, node: cst.AnnAssign) -> None:
        self.assigns.pop()

    def _instance_of(self, value: cst.BaseExpression) -> Optional[str]:
        """The class of this file that ``value`` constructs: ``cls(...)`` in a
        method, ``Net(...)`` of a class defined here."""
        if not isinstance(value, cst.Call) or not isinstance(value.func, cst.Name):
            return None
        name = value.func.value
        if name == "cls":
            return self._cls()
        return name if name in self.bases else None

    def _assign_target(self, target: cst.BaseExpression) -> None:
        if isinstance(target, (cst.Tuple, cst.List)):
            for element in target.elements:
                self._assign_target(element.value)
            return
        chain = name_chain(target)
        if isinstance(target, cst.Attribute) and len(chain) == 2 and chain[0] != "self":
            self.frames[-1].attr_sets.append((chain[0], chain[1], self.order))
        if isinstance(target, cst.Attribute) and len(chain) == 2 and chain[0] in self.frames[-1].instances:
            # `qat = cls(...); qat.bias = float_module.bias`: a conversion constructor
            # replaces the parameter the plain constructor left as it was
            self.replaced.add((self.frames[-1].instances[chain[0]], chain[1]))
        # self.w.data = ..., self.w[...] = ..., self.fc.weight = ...
        if isinstance(target, cst.Subscript) or (
            isinstance(target, cst.Attribute) and (target.attr.value == "data" or len(name_chain(target)) >= 3)
        ):
            self._mark(name_chain(target))

    def visit_Attribute(self, node: cst.Attribute) -> None:
        if isinstance(node.value, cst.Name) and node.value.value == "self":
            self.frames[-1].self_refs.add(node.attr.value)

    def leave_Return(self, node: cst.Return) -> None:
        value = node.value
        if value is None:
            return
        values = [e.value for e in value.elements] if isinstance(value, cst.Tuple) else [value]
        frame = self.frames[-1]
        for v in values:
            for c in self.creations:
                if c.frame is not frame:
                    continue
                if c.param is v or c.node is v or (isinstance(v, cst.Name) and c.local == v.value):
                    c.returned = True

    def visit_For(self, node: cst.For) -> None:
        frame = self.frames[-1]
        if isinstance(node.iter, cst.Name) and node.iter.value in frame.local_lists:
            chains = frame.local_lists[node.iter.value]  # for p in ws: ..., ws = [self.a, self.b]
        else:
            chains = _chains_in(node.iter)
        for name in _target_names(node.target):
            frame.loop_vars[name] = chains

    def visit_With(self, node: cst.With) -> None:
        for item in node.items:
            if self._is_meta_context(item.item):
                self.meta_with += 1
                self.meta_file = True

    def leave_With(self, node: cst.With) -> None:
        for item in node.items:
            if self._is_meta_context(item.item):
                self.meta_with -= 1

    # -- calls -------------------------------------------------------------------
    def visit_Call(self, node: cst.Call) -> None:
        self.order += 1
        frame = self.frames[-1]
        qualified = self.ctx.resolve(node.func)
        last = last_name(node.func)
        if last is None:
            return
        receiver = node.func.value if isinstance(node.func, cst.Attribute) and qualified is None else None
        if last in ("append", "extend", "insert") and receiver is not None:
            chain = name_chain(receiver)
            if len(chain) == 2 and chain[0] == "self":
                self._registers.append((node, chain[1]))  # self.ws.append(nn.Parameter(...))
        if last in ("register_parameter", "setattr"):
            name_arg = arg(node, 1 if last == "setattr" else 0, "name")
            if name_arg is not None and isinstance(name_arg.value, cst.SimpleString):
                value = name_arg.value.evaluated_value
                if isinstance(value, str):
                    self._registers.append((node, value))
                    self._alias(node, last, value)
        if self._is_parameter(node, qualified, last):
            self._parameter(node)
        if last == "skip_init" and (qualified is None or qualified.startswith("torch.")):
            self._skip_init(node)
            return
        if last == "to_empty" and receiver is not None:
            self._to_empty(node, receiver)
            return
        if _LOAD.search(last):
            frame.loads = True
        if last == "init_empty_weights":
            self.meta_file = True
        elif any(a.keyword is not None and a.keyword.value == "device" and _is_meta_device(a.value) for a in node.args):
            self.meta_file = True
        if _MATERIALISE.search(last) and last != "__init__":
            frame.materialise_at.append(self.order)
        if last == "apply" or any(isinstance(a.value, cst.Name) and a.value.value == "self" for a in node.args):
            frame.generic = True  # self.apply(fn), init_module(self)
        if last in _ITERATORS and receiver is not None:
            frame.iterates = True
            return
        if qualified is not None and qualified.startswith("torch.nn.init."):
            frame.init_op = True
            for a in node.args:
                self._mark_expr(a.value)
                if isinstance(a.value, cst.Call):
                    self.init_wrapped.add(a.value)
            return
        in_place = last.endswith("_") and not last.endswith("__") and last not in _NOT_INIT
        init_named = "init" in last.lower() and last != "__init__" or "reset" in last.lower() or (
            last in _INIT_FUNCTIONS and receiver is None and not (qualified or "").startswith(("torch.", "numpy.")))
        if receiver is not None and (in_place or (init_named and _INIT_METHOD.search(last))):
            chain = name_chain(receiver)
            if chain == ["self"]:
                if init_named and self._cls() is not None:  # self.reset_parameters(): own or inherited hook
                    self.hooks_called.append((self._cls(), last))
                    frame.generic = True
                frame.init_op = True
                return
            if chain and chain[0] == "super":
                if init_named and self._cls() is not None:  # super().reset_parameters()
                    self.hooks_called.append((self._cls(), last))
                    frame.generic = True
                return
            if chain:
                frame.init_op = True
                self._mark(chain)
                if init_named:
                    # `config.init_method(self.w)`: an initialiser held by another object
                    # initialises its argument, not (only) its holder
                    for a in node.args:
                        self._mark_expr(a.value)
                return
        if (in_place or init_named) and node.args:
            marked = False
            for a in node.args:
                marked = self._mark_expr(a.value) or marked
                if isinstance(a.value, cst.Call):
                    self.init_wrapped.add(a.value)
            if marked:
                frame.init_op = True

    # -- initialisation evidence ------------------------------------------------
    def _mark_expr(self, expr: cst.BaseExpression) -> bool:
        if isinstance(expr, cst.Call) and last_name(expr.func) == "getattr" and expr.args:
            if name_chain(expr.args[0].value) == ["self"] and self._cls() is not None:
                self.covered_classes.add(self._cls())  # init(getattr(self, name))
                self.frames[-1].generic = True
                return True
        chain = name_chain(expr)
        if not chain:
            return False
        self._mark(chain)
        return True

    def _alias(self, node: cst.Call, last: str, name: str) -> None:
        """``self.linear.register_parameter("bias", bias)`` (or ``setattr``)
        of a local: initialising ``self.linear.bias`` afterwards initialises
        the local (a fused layer's bias, filled by ``.data.copy_``)."""
        value = arg(node, 2 if last == "setattr" else 1, "value" if last == "setattr" else "param")
        if last == "setattr":
            owner = node.args[0].value if node.args else None
        else:
            owner = node.func.value if isinstance(node.func, cst.Attribute) else None
        chain = name_chain(owner) if owner is not None else []
        if chain and value is not None and isinstance(value.value, cst.Name):
            self.frames[-1].aliases[(*chain, name)] = value.value.value

    def _mark(self, chain: List[str], depth: int = 0) -> None:
        while len(chain) > 1 and chain[-1] in ("data", "weight_orig"):
            chain = chain[:-1]
        if not chain:
            return
        frame = self.frames[-1]
        alias = frame.aliases.get(tuple(chain))
        if alias is not None:
            frame.local_inits.add(alias)
        root = chain[0]
        if root == "self":
            if len(chain) >= 2:
                self.class_local.add((self._cls(), chain[1]))
                if len(chain) >= 3:
                    self._foreign_mark(chain, (self._cls(), chain[1]))
            return
        if root in frame.loop_vars and depth < 3:
            for iter_chain in frame.loop_vars[root]:
                if any(part in _ITERATORS for part in iter_chain):
                    if iter_chain[0] == "self" and self._cls() is not None:
                        self.covered_classes.add(self._cls())
                    else:
                        frame.iterates = True
                    frame.init_op = True
                self._mark(iter_chain, depth + 1)
        frame.local_inits.add(root)
        if len(chain) >= 2:
            # `m.weight` (m: any module) may be any class's parameter; `mod.bn.bias`
            # names a child's, so it covers only other classes than this one
            self._foreign_mark(chain, None if len(chain) == 2 else (self._cls(), None))

    def _foreign_mark(self, chain: List[str], owner: Optional[Tuple[Optional[str], Optional[str]]]) -> None:
        self.foreign.setdefault(chain[-1], set()).add(owner)

    # -- detection ----------------------------------------------------------------
    def _is_parameter(self, node: cst.Call, qualified: Optional[str], last: str) -> bool:
        if qualified is not None:
            return qualified in _PARAMETER_NAMES
        if last != "Parameter":
            return False
        if isinstance(node.func, cst.Name):
            return True  # `from .parameter import Parameter` (torch's own relative import)
        root = name_chain(node.func)
        return bool(root) and root[0] in ("nn", "torch")

    def _alloc(self, expr: cst.BaseExpression) -> Optional[cst.Call]:
        """The allocation call at the bottom of `torch.empty(...).to(device)`, if
        nothing writes its values."""
        for _ in range(8):
            if not isinstance(expr, cst.Call):
                return None
            qualified = self.ctx.resolve(expr.func)
            last = last_name(expr.func)
            if qualified is None and isinstance(expr.func, cst.Attribute):
                if last == "new_empty":
                    return expr if self._alloc_ok(expr) else None
                if last in _PASS_THROUGH:
                    if last in ("to", "type") and any(
                        _INT_DTYPE.search(self.ctx.resolve(a.value) or dotted_name(a.value) or "") for a in expr.args
                    ):
                        return None  # .to(torch.int8): garbage, but never NaN
                    expr = expr.func.value
                    continue
                return None
            if qualified is None:
                return None
            if qualified in ("torch.empty", "torch.empty_strided", "torch.empty_like"):
                return expr if self._alloc_ok(expr) else None
            module, _, short = qualified.rpartition(".")
            if module in ("torch", "torch.cuda") and short in _FLOAT_TENSOR_TYPES:
                return expr if self._sizes(expr) else None
            return None
        return None

    def _alloc_ok(self, call: cst.Call) -> bool:
        dtype = arg(call, None, "dtype")
        if dtype is not None:
            name = self.ctx.resolve(dtype.value) or dotted_name(dtype.value) or ""
            if _INT_DTYPE.search(name):
                return False
        qualified = self.ctx.resolve(call.func) or ""
        if qualified == "torch.empty_like":
            return True
        for a in call.args:
            if a.keyword is not None and a.keyword.value != "size":
                continue
            value = a.value
            if isinstance(value, (cst.Tuple, cst.List)):
                if any(number(e.value) == 0 for e in value.elements):
                    return False
                continue
            if number(value) == 0:
                return False  # torch.empty(0): nothing to initialise
        return bool(call.args)

    def _sizes(self, call: cst.Call) -> bool:
        """`torch.Tensor(n, m)` (sizes), not `torch.Tensor([1.0, 2.0])` (data) or `torch.Tensor()`."""
        positional = [a for a in call.args if a.keyword is None]
        if not positional or len(positional) != len(call.args):
            return False
        if any(number(a.value) == 0 for a in positional if not a.star):
            return False
        if len(positional) >= 2:
            return all(_size_like(a.value) or a.star for a in positional)
        only = positional[0]
        if only.star:
            return True  # torch.Tensor(*shape)
        return _size_like(only.value, single=True)

    def _parameter(self, node: cst.Call) -> None:
        data = arg(node, 0, "data")
        if data is None or node in self.init_wrapped:
            return
        frame = self.frames[-1]
        if self._storage(node, data.value) and self._cls() is not None:
            # frozen or quantized storage: a checkpoint container, filled by its loader
            self.storage_classes.add(self._cls())
        alloc = self._alloc(data.value)
        local = None
        if alloc is None and isinstance(data.value, cst.Name):
            alloc = frame.empties.get(data.value.value)
            if alloc is None:
                return
            local = data.value.value
        if alloc is None:
            return
        attr, target_local = self._target(node)
        cls = self._cls()
        what = " ".join(self.ctx.code(alloc).split())
        if len(what) > 40:
            what = what[:37] + "..."
        creation = _Creation(alloc, "empty", frame, cls, attr, local or target_local, self.order, what, param=node,
                             replaces=self._replaces_parameter())
        self.creations.append(creation)

    def _replaces_parameter(self) -> bool:
        """The statement stores into a module's parameter table
        (``module._parameters[name] = nn.Parameter(torch.empty_like(p))``):
        it materialises a parameter that exists already, as FSDP's
        ``param_init_fn`` or a meta-device loader does, for a later state
        dict or broadcast to fill; it does not define a new one."""
        assign = self.assigns[-1] if self.assigns else None
        if not isinstance(assign, cst.Assign):
            return False
        return any(isinstance(t.target, cst.Subscript) and isinstance(t.target.value, cst.Attribute)
                   and t.target.value.attr.value == "_parameters" for t in assign.targets)

    def _storage(self, node: cst.Call, data: cst.BaseExpression) -> bool:
        grad = arg(node, 1, "requires_grad")
        if grad is not None and isinstance(grad.value, cst.Name) and grad.value.value == "False":
            return True
        while isinstance(data, cst.Call):
            dtype = arg(data, None, "dtype")
            if dtype is not None and _STORAGE_DTYPE.search(self.ctx.code(dtype.value)):
                return True
            if last_name(data.func) in ("to", "view") and data.args and _STORAGE_DTYPE.search(self.ctx.code(data.args[0].value)):
                return True
            if not isinstance(data.func, cst.Attribute):
                break
            data = data.func.value
        return False

    def _target(self, node: cst.Call) -> Tuple[Optional[str], Optional[str]]:
        """(`w` for `self.w = ...` / `self.register_parameter("w", ...)`, a local name)."""
        parent = self._enclosing_register(node)
        if parent is not None:
            return parent, None
        if self.assigns:
            assign = self.assigns[-1]
            if isinstance(assign, cst.Assign) and len(assign.targets) == 1:
                target = assign.targets[0].target
            elif isinstance(assign, cst.AnnAssign):
                target = assign.target
            else:
                return None, None
            chain = name_chain(target)
            if chain and chain[0] == "self" and len(chain) >= 2:
                return chain[1], None
            if isinstance(target, cst.Name):
                return None, target.value
        return None, None

    def _enclosing_register(self, node: cst.Call) -> Optional[str]:
        # the engine visits the outer call first: look for a register_parameter/setattr
        # among the pending registrations
        for call, name in reversed(self._registers):
            if any(a.value is node for a in call.args):
                return name
        return None

    def _skip_init(self, node: cst.Call) -> None:
        attr, local = self._target(node)
        self.creations.append(
            _Creation(node, "skip_init", self.frames[-1], self._cls(), attr, local, self.order, "skip_init(...)")
        )

    def _to_empty(self, node: cst.Call, receiver: cst.BaseExpression) -> None:
        frame = self.frames[-1]
        chain = name_chain(receiver)
        meta = self._is_meta(receiver) or (chain and ".".join(chain) in frame.meta)
        if not meta:
            return
        self.creations.append(
            _Creation(node, "to_empty", frame, self._cls(), None, chain[0] if len(chain) == 1 else None,
                      self.order, "to_empty(...)")
        )

    def _is_meta(self, expr: cst.BaseExpression) -> bool:
        """A call with `device="meta"` (or `torch.device("meta")`, `.to("meta")`) at its top."""
        while isinstance(expr, cst.Call):
            for a in expr.args:
                if a.keyword is not None and a.keyword.value == "device" and _is_meta_device(a.value):
                    return True
            if last_name(expr.func) == "to" and expr.args and _is_meta_device(expr.args[0].value):
                return True
            if isinstance(expr.func, cst.Attribute):
                expr = expr.func.value
            else:
                break
        return False

    def _is_meta_context(self, expr: cst.BaseExpression) -> bool:
        if not isinstance(expr, cst.Call):
            return False
        last = last_name(expr.func)
        if last == "device" and expr.args and _is_meta_device(expr.args[0].value):
            return True
        return last in ("init_empty_weights", "init_on_device") and (
            last == "init_empty_weights" or any(_is_meta_device(a.value) for a in expr.args)
        )

    # -- report ----------------------------------------------------------------------
    def _message(self, c: _Creation) -> str:
        fractions = ", ".join(
            f"{d.name}: {fmt(100 * 2 / d.eps / 65536)}% of bit patterns are NaN/inf" for d in self.ctx.dtypes
        )
        if c.kind == "to_empty":
            head = "`to_empty()` on a module built on the meta device, and nothing in this scope initialises or loads it afterwards"
            advice = "call reset_parameters()/init_weights() or load_state_dict() after to_empty()"
        elif c.kind == "skip_init":
            head = f"`skip_init(...)`{_named(c)} is never initialised in this file"
            advice = "initialise it (nn.init.*, .reset_parameters()) or load a state dict in the same scope"
        else:
            head = f"`{c.what}`{_named(c)} becomes a parameter that is never initialised in this file"
            advice = "initialise it (nn.init.*, reset_parameters(), torch.zeros/ones) or load a state dict in the same scope"
        return (
            f"{head}: its values are whatever bytes were in memory ({fractions}; all NaN under "
            f"torch.use_deterministic_algorithms(True)); {advice}"
        )


def _named(c: _Creation) -> str:
    if c.attr is not None:
        return f" (`self.{c.attr}`)"
    if c.local is not None:
        return f" (`{c.local}`)"
    return ""


# -- helpers -----------------------------------------------------------------------------

_SIZE_NAME = re.compile(
    r"(dim|size|num|^n_|^n[A-Z]|_n$|features|channels|hidden|heads|len|width|height|depth|"
    r"rank|^k$|^n$|^m$|^d$|^h$|^w$|^c$|count|tokens|vocab|classes|units|embed|experts|^d_)",
    re.IGNORECASE,
)


def _size_like(node: cst.BaseExpression, single: bool = False) -> bool:
    if isinstance(node, cst.Integer):
        return True
    if isinstance(node, (cst.Name, cst.Attribute)):
        if not single:
            return True
        name = last_name(node) or ""
        return bool(_SIZE_NAME.search(name)) or (name.isupper() and len(name) > 1)
    if isinstance(node, cst.BinaryOperation) and isinstance(
        node.operator, (cst.Multiply, cst.FloorDivide, cst.Add, cst.Subtract)
    ):
        if isinstance(node.operator, cst.Add) and single:
            # `a + b` of lists is data
            return _size_like(node.left, True) and _size_like(node.right, True)
        return _size_like(node.left, single) and _size_like(node.right, single)
    if isinstance(node, cst.Call):
        name = last_name(node.func)
        return name in ("len", "int", "prod", "numel")
    if isinstance(node, cst.Subscript):  # shape[0], x.size(0) handled above
        base = last_name(node.value) or ""
        return base in ("shape", "size")
    return False


def _chains_in(node: cst.BaseExpression) -> List[List[str]]:
    """Every name chain an iterable mentions: `zip(self.a, self.b)` -> [[self, a], [self, b]],
    `self.named_parameters()` -> [[self, named_parameters]]."""
    if isinstance(node, cst.Call) and isinstance(node.func, cst.Name) and node.func.value in (
        "zip", "enumerate", "reversed", "list", "sorted", "tuple", "chain", "iter",
    ):
        out: List[List[str]] = []
        for a in node.args:
            out.extend(_chains_in(a.value))
        return out
    if isinstance(node, (cst.Tuple, cst.List)):
        out = []
        for e in node.elements:
            out.extend(_chains_in(e.value))
        return out
    chain = name_chain(node)
    return [chain] if chain else []


def _target_names(node: cst.BaseExpression) -> List[str]:
    if isinstance(node, cst.Name):
        return [node.value]
    if isinstance(node, (cst.Tuple, cst.List)):
        out: List[str] = []
        for e in node.elements:
            out.extend(_target_names(e.value))
        return out
    return []


def _is_meta_device(node: cst.BaseExpression) -> bool:
    if isinstance(node, cst.SimpleString):
        return node.evaluated_value in ("meta",)
    if isinstance(node, cst.Call) and last_name(node.func) == "device" and node.args:
        return _is_meta_device(node.args[0].value)
    return False


def _all_params(params: cst.Parameters) -> List[cst.Param]:
    out = list(params.posonly_params) + list(params.params) + list(params.kwonly_params)
    for star in (params.star_arg, params.star_kwarg):
        if isinstance(star, cst.Param):
            out.append(star)
    return out
