"""Safeguards that live somewhere else than the line a rule looks at.

Two kinds of questions:

- **per function** -- :func:`summarize` reads one ``FunctionDef`` and nothing
  else (a plain function of the function's source, so that it can be computed
  for a function of another module too): does it clip gradients itself
  (``clip_grad_norm_``, ``fabric.clip_gradients``, a clamp of ``p.grad``...),
  and which helpers does it call (``self._clip()`` -> ``"self._clip"``,
  ``clip_all(model)`` -> ``"clip_all"``). :class:`Safeguards` follows those
  calls through the methods of the class, its base classes in the same file
  and the module's functions;
- **per file/class** -- whether float16 is in play around a training step
  (a GradScaler or float16 autocast: "mixed"; a model made half with no
  scaler: "half"), whether a class's weights come from a checkpoint
  (transformers ``PreTrainedModel`` / diffusers ``ModelMixin`` subclasses, and
  the classes only they build), and whether a loop is a benchmark.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, Iterator, List, Optional, Set

import libcst as cst

from ..engine import iter_tree
from ..patterns import name_chain, snake_words

#: a keyword argument that hands clipping to the callee (`max_norm=cfg.clip`)
_CLIP_KEYWORD = re.compile(r"^(?:max_(?:grad_)?norm|(?:grad(?:ient)?_)?clip\w*|clip_grad\w*|gradient_clip_val)$")
_TENSOR_CLAMPS = frozenset({"clamp", "clamp_", "clip", "clip_"})
#: classes whose weights come from a checkpoint (their loaders fill every tensor)
_CHECKPOINT_BASE = re.compile(r"(?:^|\.)(?:\w*PreTrainedModel|ModelMixin)$")
#: files and functions that time a loop rather than train a model
_BENCHMARK = re.compile(r"(?:^|_)(?:bench(?:mark)?s?|profil(?:e|ing|er))(?:_|$)", re.IGNORECASE)


@dataclass(frozen=True)
class Summary:
    """What one function does, read from its own source only."""

    #: the function clips gradients itself
    clips: bool
    #: the helpers it calls: ``"self.name"`` for methods, ``"name"`` for functions
    calls: FrozenSet[str]


def summarize(func: cst.FunctionDef) -> Summary:
    """The :class:`Summary` of a function (nested functions included: a
    closure defined and called in it runs as part of it)."""
    clips = False
    calls: Set[str] = set()
    for node, _ in iter_tree(func.body):
        if not isinstance(node, cst.Call):
            continue
        if is_clip(node):
            clips = True
        chain = name_chain(node.func)
        if len(chain) == 1:
            calls.add(chain[0])
        elif len(chain) == 2 and chain[0] == "self":
            calls.add("self." + chain[1])
    return Summary(clips, frozenset(calls))


def is_clip(call: cst.Call) -> bool:
    """A call that clips gradients by itself: `clip_grad_norm_`,
    `clip_grad_value_`, `accelerator.clip_grad_norm_`, `fabric.clip_gradients`,
    `self.clip_gradients`, any function named like *clip*grad* or
    *clip*norm*, a clamp of a `.grad` (`p.grad.clamp_(-1, 1)`), a
    hand-written norm clip (`p.grad.mul_(clip_coef)`), or a call that is handed
    a clipping setting (`step(opt, max_norm=cfg.max_norm)`,
    `Trainer(gradient_clip_val=1.0)`) that is not switched off (`None`, `0`)."""
    func = call.func
    if isinstance(func, cst.Name):
        name = func.value
    elif isinstance(func, cst.Attribute):
        name = func.attr.value
    else:
        return False
    lowered = name.lower()
    if "clip" in lowered and ("grad" in lowered or "norm" in lowered):
        return True
    for a in call.args:
        if a.keyword is not None and _CLIP_KEYWORD.match(a.keyword.value) and not _off(a.value):
            return True
    if lowered in _TENSOR_CLAMPS or lowered in ("mul_", "div_"):
        target = func.value if isinstance(func, cst.Attribute) else None
        if target is None and call.args:
            target = call.args[0].value
        if target is not None and _mentions_grad(target):
            if lowered in _TENSOR_CLAMPS:
                return True
            return any(
                "clip" in snake_words(_last(a.value)) or "coef" in _last(a.value).lower() for a in call.args
            )
    return False


def _off(value: cst.BaseExpression) -> bool:
    if isinstance(value, cst.Name):
        return value.value in ("None", "False")
    if isinstance(value, (cst.Integer, cst.Float)):
        return float(value.value) == 0.0
    return False


def _last(node: cst.BaseExpression) -> str:
    chain = name_chain(node, partial=True)
    return chain[-1] if chain else ""


#: methods only a module has: a name they are called on holds a model
_MODULE_METHODS = r"parameters|named_parameters|train|eval|state_dict|load_state_dict|modules|zero_grad|requires_grad_"
#: names of models (where the file shows nothing else)
_MODEL_NAME = re.compile(
    r"(?:^|_)(?:model|net|network|module|encoder|decoder|backbone|policy|actor|critic|generator|discriminator"
    r"|unet|vae|transformer|classifier)s?$",
    re.IGNORECASE,
)
#: PEFT wrappers: their trainable adapters are float32 (``autocast_adapter_dtype``
#: defaults to True), whatever the dtype of the frozen base model
_PEFT = re.compile(r"\b(?:get_peft_model|PeftModel\.from_pretrained|prepare_model_for_kbit_training)\s*\(")
#: calls whose dtype argument sets a model's weights
_MODEL_LOADERS = ("from_pretrained", "from_config", "from_single_file", "set_default_dtype")


def trains_float32_adapters(source: str) -> bool:
    """The file wraps its model with PEFT, which keeps the trainable adapters
    in float32 unless told otherwise (``autocast_adapter_dtype=False``)."""
    return _PEFT.search(source) is not None and "autocast_adapter_dtype=False" not in source.replace(" ", "")


def _module_like(ctx, receiver: cst.BaseExpression, assigned: Optional[cst.BaseExpression]) -> bool:
    """A receiver (or the name it is assigned to) that holds a module: a
    ``torch.nn`` class built in place (``nn.Sequential(...).half()``), a name
    the file uses as a module (``m.parameters()``, ``m.train()``,
    ``m.state_dict()``...) or, where the file shows nothing, a name of a model
    (``model``, ``net``, ``*_encoder``...: a name heuristic)."""
    names = []
    for node in (assigned, receiver):
        while isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and not (
            (ctx.resolve(node.func) or "").startswith("torch.nn.")
        ):
            node = node.func.value  # model.cuda().half(): the model
        if isinstance(node, cst.Call) and (ctx.resolve(node.func) or "").startswith("torch.nn."):
            return True
        chain = name_chain(node, partial=True) if node is not None else []
        if chain:
            names.append(".".join(chain))
            if _MODEL_NAME.search(chain[-1]):
                return True
    return any(re.search(rf"(?<![\w.]){re.escape(n)}\.(?:{_MODULE_METHODS})\(", ctx.source) for n in names)


def makes_model_half(ctx, call: cst.Call, parents: Callable[[], Dict[cst.CSTNode, Optional[cst.CSTNode]]]) -> bool:
    """``call`` casts a model's weights to float16: ``model.half()``,
    ``model.to(torch.float16)`` on a name the file uses as a module, or a
    loader given ``torch_dtype``/``dtype=torch.float16``. A cast of an input
    tensor (``pixel_values.to(device, torch.float16)``) is not one."""
    func = call.func
    if not isinstance(func, cst.Attribute):
        return False
    method = func.attr.value
    if not (method == "half" and not call.args or method in ("to", "type") or method.endswith(_MODEL_LOADERS)):
        return False
    half_arg = any((ctx.resolve(a.value) or "") in ("torch.float16", "torch.half") for a in call.args)
    if method.endswith(_MODEL_LOADERS):
        return half_arg
    if method != "half" and not half_arg:
        return False
    parents = parents()
    assigned = None
    up = parents.get(call)
    while isinstance(up, (cst.Call, cst.Attribute)):
        up = parents.get(up)
    if isinstance(up, cst.Assign) and len(up.targets) == 1:
        assigned = up.targets[0].target
    return _module_like(ctx, func.value, assigned)


def _mentions_grad(node: cst.BaseExpression) -> bool:
    return "grad" in name_chain(node, partial=True)


class Safeguards:
    """The file-level answers, built on :class:`nanlint.analysis.values.Facts`."""

    def __init__(self, facts) -> None:
        self.facts = facts
        self.ctx = facts.ctx
        self.scopes = facts.scopes
        self._summaries: Dict[cst.FunctionDef, Summary] = {}
        self._clips: Dict[cst.FunctionDef, bool] = {}
        self._checkpoint: Dict[cst.ClassDef, bool] = {}

    # -- gradient clipping ----------------------------------------------------
    def summary(self, func: cst.FunctionDef) -> Summary:
        found = self._summaries.get(func)
        if found is None:
            found = self._summaries[func] = summarize(func)
        return found

    def clips(self, func: cst.FunctionDef) -> bool:
        """The function clips gradients, itself or through the helpers of this
        file it calls (methods of its class and of base classes in the file,
        module functions), to any depth."""
        if func in self._clips:
            return self._clips[func]
        self._clips[func] = False  # a recursion ends here
        summary = self.summary(func)
        result = summary.clips or any(
            callee is not None and self.clips(callee) for callee in (self.callee(name, func) for name in summary.calls)
        )
        self._clips[func] = result
        return result

    def clips_call(self, call: cst.Call) -> bool:
        """The call clips gradients: directly (:func:`is_clip`) or by calling a
        function of this file that does (``self._clip()``, ``clip_all(model)``)."""
        if is_clip(call):
            return True
        chain = name_chain(call.func)
        if len(chain) == 1:
            name = chain[0]
        elif len(chain) == 2 and chain[0] == "self":
            name = "self." + chain[1]
        else:
            return False
        callee = self.callee(name, call)
        return callee is not None and self.clips(callee)

    def callee(self, name: str, near: cst.CSTNode) -> Optional[cst.FunctionDef]:
        """The function of this file a summary's call name stands for."""
        if name.startswith("self."):
            method = name[len("self."):]
            cls = self.scopes.enclosing_class(near)
            for c in self.lineage(cls) if cls is not None else ():
                for b in self.scopes.bindings.get(c, {}).get(method, []):
                    if isinstance(b.node, cst.FunctionDef):
                        return b.node
            return None
        for b in self.scopes.bindings.get(self.scopes.module, {}).get(name, []):
            if isinstance(b.node, cst.FunctionDef):
                return b.node
        return None

    def lineage(self, cls: cst.ClassDef, depth: int = 0) -> Iterator[cst.ClassDef]:
        """A class and its base classes defined in the same file."""
        yield cls
        if depth > 8:
            return
        for base in cls.bases:
            if isinstance(base.value, cst.Name):
                for b in self.scopes.bindings.get(self.scopes.module, {}).get(base.value.value, []):
                    if isinstance(b.node, cst.ClassDef) and b.node is not cls:
                        yield from self.lineage(b.node, depth + 1)

    def optimizer_clips(self, built: Optional[cst.BaseExpression]) -> bool:
        """An optimizer that clips in its own ``step``: built from a class of
        this file whose ``step`` clips (an optimizer wrapper)."""
        if not isinstance(built, cst.Call) or not isinstance(built.func, cst.Name):
            return False
        for b in self.scopes.bindings.get(self.scopes.module, {}).get(built.func.value, []):
            if isinstance(b.node, cst.ClassDef):
                for c in self.lineage(b.node):
                    for s in self.scopes.bindings.get(c, {}).get("step", []):
                        if isinstance(s.node, cst.FunctionDef) and self.clips(s.node):
                            return True
        return False

    # -- float16 in play ------------------------------------------------------
    def precision(self, node: cst.CSTNode) -> Optional[str]:
        """How float16 reaches the training code around ``node``: "mixed" (a
        GradScaler, an autocast that is not bfloat16, a "16-mixed"/"fp16"
        setting), "half" (a model or tensor made float16 with none of those),
        or None (nothing shows float16). Read in the class around ``node``
        (else its top-level function) and the module's own statements."""
        mixed = half = False
        for region in self._regions(node):
            for n, _ in iter_tree(region):
                kind = self._precision_mark(n)
                if kind == "mixed":
                    mixed = True
                elif kind == "half":
                    half = True
        return "mixed" if mixed else "half" if half else None

    def _regions(self, node: cst.CSTNode) -> List[cst.CSTNode]:
        top = node
        for up in self.scopes.ancestors(node):
            if isinstance(up, cst.Module):
                break
            top = up
        regions: List[cst.CSTNode] = [] if top is node else [top]
        for stmt in self.scopes.module.body:
            if isinstance(stmt, cst.SimpleStatementLine) and all(
                isinstance(small, (cst.Import, cst.ImportFrom)) for small in stmt.body
            ):
                continue  # importing GradScaler is not using it
            if not isinstance(stmt, (cst.FunctionDef, cst.ClassDef)) and stmt is not top:
                regions.append(stmt)
        return regions

    def _precision_mark(self, n: cst.CSTNode) -> Optional[str]:
        if isinstance(n, (cst.Name, cst.Attribute)):
            last = n.value if isinstance(n, cst.Name) else n.attr.value
            if last == "GradScaler" or last in ("fp16", "use_fp16", "amp", "use_amp"):
                return "mixed"
            return None
        if isinstance(n, cst.Call):
            last = _last(n.func)
            if last == "autocast" and "bfloat16" not in self.ctx.code(n):
                enabled = next((a for a in n.args if a.keyword is not None and a.keyword.value == "enabled"), None)
                return None if enabled is not None and _off(enabled.value) else "mixed"
            if makes_model_half(self.ctx, n, lambda: self.scopes.parent):
                # float16 activations; PEFT's trainable adapters stay float32, like AMP's master weights
                return "mixed" if trains_float32_adapters(self.ctx.source) else "half"
            return None
        if isinstance(n, cst.SimpleString):
            value = n.evaluated_value
            if isinstance(value, str) and value in ("16-mixed", "16", "fp16", "16-true"):
                return "mixed" if value != "16-true" else "half"
        return None

    def benchmark(self, node: cst.CSTNode) -> bool:
        """Code that times a loop rather than trains a model: a file or a
        function named like a benchmark or a profile (``bench.py``,
        ``benchmark_step``). A name heuristic: nothing else tells a timing
        loop from a training loop."""
        stem = self.ctx.path.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
        if _BENCHMARK.search(stem):
            return True
        func = self.scopes.enclosing_function(node)
        return func is not None and bool(_BENCHMARK.search(func.name.value))

    # -- weights from a checkpoint -----------------------------------------------
    def checkpoint_loaded(self, cls: cst.ClassDef, depth: int = 0) -> bool:
        """The class's weights come from a checkpoint: it subclasses a
        pretrained-model base (transformers ``*PreTrainedModel``, diffusers
        ``ModelMixin``, directly or through classes of this file), or it is
        built only inside classes that are (a sub-layer of such a model) or
        where the file loads a state dict into the model it builds."""
        if cls in self._checkpoint:
            return self._checkpoint[cls]
        self._checkpoint[cls] = False
        result = any(
            _CHECKPOINT_BASE.search(".".join(name_chain(base.value)))
            for c in self.lineage(cls) for base in c.bases if base.keyword is None
        )
        if not result and depth < 8:
            builders = self._builders(cls.name.value)
            if builders is not None:
                classes, loaded = builders
                if classes or loaded:
                    result = all(self.checkpoint_loaded(b, depth + 1) for b in classes)
                elif self.scopes.parent.get(cls) is self.scopes.module:
                    result = self._loaded_by_importers(cls.name.value)  # built in other modules only
        self._checkpoint[cls] = result
        return result

    def _loaded_by_importers(self, name: str) -> bool:
        """A class this file never builds, which the project's other modules
        (test code left out) build only outside classes and then give
        ``load_state_dict``: whisper's ``load_model`` builds ``Whisper(dims)``
        and loads the checkpoint into it."""
        project = self.ctx.project
        if project is None or self.facts.remote:
            return False
        found = project.callers(name)
        if not found:
            return False
        from .values import _remote_facts

        loaded = 0
        for other, local, via_module, test in found:
            if test:
                continue
            facts = _remote_facts(other, self.ctx.dtypes, project.roots[-1])
            builders = None if facts is None else facts.safeguards._builders(
                local.lstrip("*"), attr=name if via_module else None)
            if builders is None or builders[0]:
                return False  # a construction there is not loaded, or is a layer of another class
            loaded += len(builders[1])
        return loaded > 0

    def _builders(self, name: str, attr: Optional[str] = None):
        """(the classes whose code constructs ``name(...)`` -- or
        ``name.attr(...)``, a class of a module imported as ``name`` --, the
        constructions followed by a ``load_state_dict`` into the model they
        build); None when one of those outside a class is not so followed
        (``model = RWKV(args).cuda()`` then ``model.load_state_dict(sd)``, in
        an inference script, or in a wrapper's ``__init__``, as so-vits-svc's
        ``WhisperPPG`` and TimesFM's ``self._model = ppd.Decoder(config)``:
        every layer the model builds holds the checkpoint's values)."""
        out: List[cst.ClassDef] = []
        loaded: List[cst.Call] = []
        for n in self.scopes.reads.get(self.scopes.module, {}).get(name, []) + [
            r for scope, table in self.scopes.reads.items() if scope is not self.scopes.module
            for r in table.get(name, [])
        ]:
            if attr is not None:
                up = self.scopes.parent.get(n)
                if not (isinstance(up, cst.Attribute) and up.value is n and up.attr.value == attr):
                    continue
                n = up
            call = self.scopes.parent.get(n)
            if not (isinstance(call, cst.Call) and call.func is n):
                continue
            owner = self.scopes.enclosing_class(n)
            if owner is None:
                if not self._state_loaded(call):
                    return None
                loaded.append(call)
            elif self._state_loaded(call):
                loaded.append(call)  # a wrapper's method that builds the model and loads a checkpoint into it
            elif owner not in out:
                out.append(owner)
        return out, loaded

    def _state_loaded(self, call: cst.Call) -> bool:
        """``model = Cls(...)`` (through ``.to(...)``, ``.cuda()``, ``.eval()``...)
        whose binding is later given ``model.load_state_dict(...)``: directly,
        after a rebinding through such calls (``model = model.to(device)``),
        or by every caller in this file of the function that returns it
        (``model, transform = build(...)`` then ``model.load_state_dict(sd)``)."""
        node = self._through_calls(call)
        up = self.scopes.parent.get(node)
        if not (isinstance(up, cst.Assign) and up.value is node and len(up.targets) == 1):
            return False
        target = up.targets[0].target
        if isinstance(target, cst.Name):
            return self._binding_loaded(up, target.value, 0)
        return self._attribute_loaded(up, target)

    def _attribute_loaded(self, stmt: cst.Assign, target: cst.BaseExpression) -> bool:
        """``self._model = Cls(...)`` then ``self._model.load_state_dict(...)``
        in the same function (a wrapper's constructor)."""
        if not (isinstance(target, cst.Attribute) and isinstance(target.value, cst.Name)
                and target.value.value == "self"):
            return False
        func = self.scopes.enclosing_function(stmt)
        if func is None:
            return False
        field = target.attr.value
        for n in self.scopes.reads.get(func, {}).get("self", []):
            owner = self.scopes.parent.get(n)
            if isinstance(owner, cst.Attribute) and owner.value is n and owner.attr.value == field \
                    and self._given_state_dict(owner):
                return True
        return False

    def _given_state_dict(self, node: cst.CSTNode) -> bool:
        """``node.load_state_dict(...)``."""
        method = self.scopes.parent.get(node)
        return isinstance(method, cst.Attribute) and method.value is node and method.attr.value == "load_state_dict" \
            and isinstance(self.scopes.parent.get(method), cst.Call)

    def _through_calls(self, node: cst.CSTNode) -> cst.CSTNode:
        """The outermost of ``node.to(...).cuda().eval()``: method calls on it."""
        up = self.scopes.parent.get(node)
        while isinstance(up, cst.Attribute) and up.value is node and isinstance(self.scopes.parent.get(up), cst.Call):
            node = self.scopes.parent.get(up)
            up = self.scopes.parent.get(node)
        return node

    def _binding_loaded(self, stmt: cst.CSTNode, name: str, depth: int) -> bool:
        """Whether the binding ``stmt`` makes of ``name`` is given a state dict
        (see :meth:`_state_loaded`); three hops at most."""
        reads = self.scopes.reads_of_statement(stmt, name)
        if any(self._given_state_dict(read) for read in reads):
            return True
        if depth >= 3:
            return False
        for read in reads:
            top = self._through_calls(read)
            up = self.scopes.parent.get(top)
            if isinstance(up, cst.Assign) and up.value is top and len(up.targets) == 1 \
                    and isinstance(up.targets[0].target, cst.Name):
                if self._binding_loaded(up, up.targets[0].target.value, depth + 1):
                    return True
            elif top is read and self._returned_then_loaded(read, depth):
                return True
        return False

    def _returned_then_loaded(self, read: cst.Name, depth: int) -> bool:
        """``return model`` / ``return model, transform`` in a module-level
        function whose every call in this file (one at least) binds that value
        to a name given a state dict."""
        up = self.scopes.parent.get(read)
        index = None
        if isinstance(up, cst.Element):
            tup = self.scopes.parent.get(up)
            if isinstance(tup, cst.Tuple):
                index = list(tup.elements).index(up)
                up = self.scopes.parent.get(tup)
        if not isinstance(up, cst.Return):
            return False
        func = self.scopes.enclosing_function(read)
        if func is None or self.scopes.parent.get(func) is not self.scopes.module:
            return False
        calls = [n for table in self.scopes.reads.values() for n in table.get(func.name.value, [])]
        if not calls:
            return False
        for n in calls:
            call = self.scopes.parent.get(n)
            stmt = self.scopes.parent.get(call)
            if not (isinstance(call, cst.Call) and call.func is n and isinstance(stmt, cst.Assign)
                    and stmt.value is call and len(stmt.targets) == 1):
                return False
            target = stmt.targets[0].target
            if index is not None:
                if not (isinstance(target, (cst.Tuple, cst.List)) and len(target.elements) > index):
                    return False
                target = target.elements[index].value
            if not (isinstance(target, cst.Name) and self._binding_loaded(stmt, target.value, depth + 1)):
                return False
        return True
