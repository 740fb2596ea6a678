"""What values are: the facts every rule asks about, computed lazily and cached.

``Facts`` answers, for an expression of the file being checked:

- ``dtype(expr)``: ``HALF`` (explicitly float16), ``BF16`` (explicitly
  bfloat16: float32's range), ``WIDE`` (provably float32/float64), ``INTEGER`` (int or bool tensors: ids, counts, masks),
  ``HOST`` (Python numbers, numpy values -- also a parameter the function
  hands to numpy, ``numpy_params`` -- never a float16 tensor), or
  ``UNKNOWN`` -- an activation of a model that may run in half;
- ``can_be_half(expr)``: whether float16 can reach the value at all
  (not when the dtype is WIDE/BF16/INTEGER/HOST, nor inside a float32 region:
  ``autocast(enabled=False)``, ``@force_fp32``, ``custom_fwd(cast_inputs=float32)``);
- ``bounded_above(expr)`` / ``range_facts(expr)``: sign and bound facts,
  following names over several hops, ``self.<attr>`` set in the class,
  module constants and the returns of functions of the same file;
- ``origin(expr)``: ``ACTIVATION`` when the value comes out of a layer, a
  matmul or a model (ordinary inputs reach large magnitudes), ``HOST`` for
  schedule/config arithmetic, else ``UNKNOWN``;
- ``grad_flows(node)``: False under ``no_grad``/``inference_mode`` (blocks and
  decorators) and in data-pipeline code;
- ``consumers(expr)``: the operations a value flows into next (``softmax``,
  ``max``, ``topk``, ``sum``...), through one assignment.

Everything errs towards UNKNOWN: a rule that needs a fact it cannot get
reports with ``low`` confidence instead of guessing.
"""

from __future__ import annotations

import ast
import re
from typing import Dict, FrozenSet, List, Optional, Set, Tuple

import libcst as cst

from ..patterns import (arg, last_name, look_through, number, subject, torch_op, value_facts, is_method_call, METADATA, NONNEG,
                        NONPOS, LOWER, UPPER)
from ..resolve import dotted_name
from ..engine import iter_tree, scope_nodes, subtree
from .safeguards import Safeguards
from .project import LOG_PROBABILITY, PROBABILITY, STAR, parts_below
from .scopes import SCOPE_NODES, VALUES_AND_INDICES, Binding, Scopes

HALF = "half"
#: explicitly bfloat16: a low-precision float with float32's range (max 3.39e38)
BF16 = "bfloat16"
WIDE = "wide"
INTEGER = "integer"
HOST = "host"
UNKNOWN = "unknown"

# how a guarded value reaches 0 (``Facts.zero_case``)
ORDINARY = "ordinary"
HALF_ONLY = "half-only"
EDGE = "edge"
WEIGHT = "weight"

ACTIVATION = "activation"

_TORCH_DTYPES = {
    "float16": HALF, "half": HALF, "bfloat16": BF16,
    "float32": WIDE, "float": WIDE, "float64": WIDE, "double": WIDE,
    "int8": INTEGER, "uint8": INTEGER, "int16": INTEGER, "short": INTEGER, "int32": INTEGER,
    "int": INTEGER, "int64": INTEGER, "long": INTEGER, "bool": INTEGER,
}
# methods that set the dtype
_CAST_METHODS = {
    "half": HALF, "bfloat16": BF16, "float": WIDE, "double": WIDE,
    "long": INTEGER, "int": INTEGER, "bool": INTEGER, "short": INTEGER, "byte": INTEGER, "char": INTEGER,
}
# ops whose result is an integer or bool tensor whatever the input
_INTEGER_OPS = frozenset({
    "argmax", "argmin", "argsort", "nonzero", "eq", "ne", "lt", "le", "gt", "ge", "isnan", "isinf",
    "isfinite", "logical_and", "logical_or", "logical_not", "logical_xor", "searchsorted", "bucketize",
    "randint", "randint_like", "randperm", "bincount", "multinomial", "numel", "count_nonzero",
    "triu_indices", "tril_indices", "any", "all", "isclose", "isin",
})
# decompositions and solvers: float16 and bfloat16 raise ("not implemented for 'Half'",
# "Low precision dtypes not supported"), so what they return is float32/float64 or complex
_WIDE_ONLY_OPS = frozenset({
    "eigh", "eigvalsh", "eig", "eigvals", "cholesky", "cholesky_ex", "inv", "inv_ex", "inverse", "svd",
    "svdvals", "qr", "solve", "solve_ex", "det", "logdet", "slogdet", "lstsq", "pinv", "pinverse",
    "cholesky_inverse", "cholesky_solve", "lu_factor", "lu_factor_ex", "lu", "lu_solve", "ldl_factor",
    "solve_triangular", "triangular_solve",
})
#: torch ops whose every result, unpacked, has the dtype of the tensor they take
_SAME_DTYPE_PARTS = frozenset({
    "std_mean", "var_mean", "aminmax", "chunk", "split", "unbind", "tensor_split", "hsplit", "vsplit", "dsplit",
})
#: numpy functions that convert their argument (a tensor handed to them is not numpy data)
_NUMPY_CONVERSIONS = frozenset({"array", "asarray", "ascontiguousarray", "asanyarray", "copy", "frombuffer"})
_ARITHMETIC = (cst.Add, cst.Subtract, cst.Multiply, cst.Divide)


def _roots(node: cst.BaseExpression, depth: int = 0) -> set:
    """The plain names whose values an expression computes with directly:
    ``box2[2] - box2[0]`` -> {box2}; not through calls or metadata."""
    if depth > 12:
        return set()
    kind = type(node)
    if kind is cst.Name:
        return {node.value}
    if kind is cst.Subscript:
        return _roots(node.value, depth + 1)
    if kind is cst.Attribute:
        return set() if node.attr.value in METADATA else _roots(node.value, depth + 1)
    if kind is cst.BinaryOperation:
        return _roots(node.left, depth + 1) | _roots(node.right, depth + 1)
    if kind is cst.UnaryOperation:
        return _roots(node.expression, depth + 1)
    return set()


#: the legacy typed tensor classes (``torch.FloatTensor``, ``torch.cuda.LongTensor``)
_LEGACY_TENSORS = {
    "FloatTensor": WIDE, "DoubleTensor": WIDE, "HalfTensor": HALF, "BFloat16Tensor": BF16,
    "LongTensor": INTEGER, "IntTensor": INTEGER, "ShortTensor": INTEGER, "CharTensor": INTEGER,
    "ByteTensor": INTEGER, "BoolTensor": INTEGER,
}
# ops that keep their first operand's dtype
_SAME_DTYPE_OPS = frozenset({
    "view", "reshape", "unsqueeze", "squeeze", "transpose", "permute", "expand", "expand_as", "contiguous",
    "flatten", "detach", "clone", "t", "flip", "roll", "repeat", "repeat_interleave", "narrow", "select",
    "index_select", "gather", "masked_fill", "masked_fill_", "clamp", "clamp_", "clip", "abs", "neg", "exp",
    "log", "sqrt", "rsqrt", "sin", "cos", "tanh", "sigmoid", "relu", "cumsum", "cumprod", "sum", "mean",
    "pow", "square", "reciprocal", "round", "floor", "ceil", "chunk", "split", "unbind", "diff", "sort",
    "max", "min", "amax", "amin", "logsumexp", "softmax", "log_softmax", "exp_", "log_", "mul", "add",
    "sub", "div", "clamp_min", "clamp_max", "where", "flatten", "unflatten", "to_dense",
    "norm", "vector_norm", "std", "var", "prod", "nansum", "nanmean", "median", "topk", "kthvalue", "cummax",
    "cummin", "sign", "log1p", "expm1", "log2", "log10", "erf", "neg_", "abs_", "sqrt_", "mul_", "div_",
    "add_", "sub_",
})
# factories: float32 (the default dtype) unless a dtype is given
_FACTORIES = frozenset({
    "zeros", "ones", "empty", "full", "rand", "randn", "linspace", "logspace", "eye", "tensor",
    "as_tensor", "scalar_tensor", "from_numpy", "tril", "triu",
})
_LIKE_FACTORIES = frozenset({
    "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like",
    "new_zeros", "new_ones", "new_empty", "new_full", "new_tensor",
})
# layers and ops whose output is an activation of ordinary, unbounded magnitude
_ACTIVATION_OPS = frozenset({
    "matmul", "mm", "bmm", "baddbmm", "einsum", "linear", "conv1d", "conv2d", "conv3d", "bilinear",
    "addmm", "conv_transpose1d", "conv_transpose2d", "scaled_dot_product_attention",
})
# products of activations (attention scores, logits of a similarity)
_SCORE_OPS = frozenset({"matmul", "mm", "bmm", "baddbmm", "einsum"})
# elementwise results that underflow to exactly 0 in float16 for ordinary logits
_UNDERFLOWING = frozenset({"softmax", "sigmoid", "softmin", "sigmoid_"})
# selections whose values are elements of their input
_SELECTS_VALUES = frozenset({"gather", "index_select", "take_along_dim", "masked_select", "take", "narrow", "select"})
# methods that keep a tensor's values (and its zeros)
_KEEPS_VALUES = frozenset({
    "unsqueeze", "view", "reshape", "expand", "expand_as", "view_as", "reshape_as", "to", "type_as",
    "detach", "contiguous", "squeeze", "flatten", "half", "transpose", "permute", "t", "clone",
})
#: a probability by name, where nothing else tells (documented in NL001)
_PROB_NAME = re.compile(r"^(probs?|probabilit(y|ies)|p_attn|\w+_probs?|probs?_\w+)$", re.IGNORECASE)
_HOST_MODULES = ("math", "numpy", "np", "random", "scipy")

_TRANSFORM_BASE = re.compile(r"(?:^|\.)\w*Transform$")
_FP32_DECORATORS = re.compile(r"(force_fp32|float32_region|no_autocast|disable_autocast)")
_NO_GRAD = frozenset({"no_grad", "inference_mode"})
#: reads that leave autograd: integer casts, rounding, Python numbers
_NUMBER_READS = frozenset({"long", "int", "floor", "ceil", "round", "trunc", "item", "tolist", "numpy", "argmax", "argmin",
                           "bucketize", "searchsorted", "argsort"})
#: modules that prepare a model's inputs (see :func:`input_pipeline`)
_INPUT_MODULES = r"feature_extraction|image_processing|video_processing|processing|preprocess(?:ing)?|audio_utils"
_INPUT_FILE = re.compile(rf"^(?:{_INPUT_MODULES})(?:_|\.|$)")
#: preprocessing/metrics modules and functions (a name heuristic: no gradient flows there)
_DATA_FILE = re.compile(rf"^(?:{_INPUT_MODULES}|postprocess(?:ing)?|metrics?|evaluat(?:e|ion))(?:_|\.|$)")
#: folders of data pipelines: dataset samples are prepared without gradients
_DATA_DIRS = frozenset({"data", "dataset", "datasets", "dataloaders", "metrics"})
_NO_GRAD_FUNCTION = re.compile(
    r"extract\w*features?|^_?(?:pre|post)_?process|(?:^|_)metrics?(?:_|$)|^_?compute_metrics", re.IGNORECASE
)
_MODULE_BASE = re.compile(
    r"(^|\.)(Module|ModuleList|Sequential|PreTrainedModel|ModelMixin|LightningModule|"
    r"\w*(Layer|Block|Attention|Model|Net|Encoder|Decoder|Head|Embedding|Transformer|MLP))$"
)


class Facts:
    """The facts of one file. Built on first use by ``Context.facts``."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.scopes = Scopes(ctx.module, ctx.kids)
        self._dtype: Dict[cst.CSTNode, str] = {}
        self._module_class: Dict[cst.ClassDef, bool] = {}
        self._safeguards: Optional[Safeguards] = None
        self._project = None
        self._call_index: Optional[Dict[str, List[cst.Call]]] = None
        self._numpy_params: Dict[cst.FunctionDef, frozenset] = {}
        #: the analysis of a caller in another module (see :meth:`all_calls`):
        #: it does not follow its own callers further
        self.remote = False
        self._all_calls: Dict[cst.FunctionDef, Optional[List[Tuple["Facts", cst.Call]]]] = {}
        self._only_calls: Dict[cst.FunctionDef, Optional[List[cst.Call]]] = {}
        self._mentions: Dict[Tuple[Optional[cst.ClassDef], str], int] = {}
        self._number_functions: Dict[cst.FunctionDef, bool] = {}

    @property
    def safeguards(self) -> Safeguards:
        """Safeguards that live elsewhere (clipping helpers, checkpoints...)."""
        if self._safeguards is None:
            self._safeguards = Safeguards(self)
        return self._safeguards

    # -- across functions and modules (``project``) ---------------------------
    @property
    def project(self):
        if self._project is None:
            from .project import ProjectFacts

            self._project = ProjectFacts(self)
        return self._project

    def constant(self, node: cst.BaseExpression):
        """The numeric value an expression stands for (a literal, ``-INF``, a
        module constant of this file or imported from the project, a class or
        config field default), as a :class:`project.Constant`, or None."""
        return self.project.constant(node)

    def typical_number(self, node: cst.BaseExpression, depth: int = 0) -> Optional[float]:
        """The number an expression stands for, as :meth:`constant`, or
        else the default of the parameter it reads (``temperature=20``), also
        through ``self.t`` assigned such a parameter in every assignment of
        the class: the value the author wrote down as the usual one, which a
        caller may override."""
        found = self.constant(node)
        if found is not None:
            return found.value
        if depth > 2:
            return None
        if isinstance(node, cst.Name):
            for b in self.scopes.reaching(node)[:1]:
                if b.kind == "param" and b.value is not None:
                    default = self.constant(b.value)
                    return default.value if default is not None else None
            return None
        if isinstance(node, cst.Attribute):
            values = [v for _, v in self.scopes.self_attribute(node)]
            if not values or any(v is None for v in values):
                return None
            numbers = {self.typical_number(v, depth + 1) for v in values}  # type: ignore[arg-type]
            return numbers.pop() if len(numbers) == 1 else None
        return None

    def summary_of_call(self, call: cst.Call):
        """The :class:`project.FunctionSummary` of the function of this file
        or of the project that ``call`` reaches, or None."""
        return self.project.summary_of_call(call)

    # -- dtype ---------------------------------------------------------------
    def dtype(self, node: cst.BaseExpression, depth: int = 0) -> str:
        cached = self._dtype.get(node)
        if cached is not None:
            return cached
        self._dtype[node] = UNKNOWN  # cycles (x = x * 2) stay unknown
        result = self._dtype_of(node, depth) if depth < 24 else UNKNOWN
        self._dtype[node] = result
        return result

    def _dtype_of(self, node: cst.BaseExpression, depth: int) -> str:
        rec = lambda n: self.dtype(n, depth + 1)  # noqa: E731
        if number(node) is not None or isinstance(node, (cst.SimpleString, cst.ConcatenatedString, cst.FormattedString)):
            return HOST
        if isinstance(node, (cst.List, cst.Tuple, cst.Dict, cst.ListComp, cst.DictComp, cst.Set)):
            return HOST
        if isinstance(node, cst.Comparison):
            return INTEGER
        if isinstance(node, cst.BooleanOperation):
            return _join(rec(node.left), rec(node.right))
        if isinstance(node, cst.UnaryOperation):
            if isinstance(node.operator, cst.Not):
                return HOST
            if isinstance(node.operator, cst.BitInvert):
                return INTEGER
            return rec(node.expression)
        if isinstance(node, cst.BinaryOperation):
            if isinstance(node.operator, (cst.BitAnd, cst.BitOr, cst.BitXor, cst.LeftShift, cst.RightShift)):
                return INTEGER
            left, right = rec(node.left), rec(node.right)
            if {left, right} == {INTEGER, HOST} and _is_float_literal(node.left if left == HOST else node.right):
                return WIDE  # ``mask * 1e6``: an integer tensor times a Python float is float32
            return _promote(left, right, isinstance(node.operator, cst.Divide))
        if isinstance(node, cst.IfExp):
            return _join(rec(node.body), rec(node.orelse))
        if isinstance(node, cst.Subscript):
            if (type(node.value) is cst.Call and len(node.slice) == 1 and type(node.slice[0].slice) is cst.Index
                    and number(node.slice[0].slice.value) == 1 and torch_op(self.ctx, node.value) in VALUES_AND_INDICES):
                return INTEGER  # ``x.topk(k)[1]``, ``x.max(-1)[1]``: the indices
            return self._element_dtype(node.value, depth)
        if isinstance(node, cst.Name):
            return self._name_dtype(node, depth)
        if isinstance(node, cst.Attribute):
            qualified = self.ctx.resolve(node)
            if qualified is not None:
                head = qualified.split(".")[0]
                if head in _HOST_MODULES:
                    return HOST
                return UNKNOWN
            if node.attr.value in ("shape", "ndim", "dtype", "device", "size"):
                return HOST
            if node.attr.value == "indices":
                return INTEGER
            if node.attr.value == "values":
                return rec(node.value)
            values = [v for _, v in self.scopes.self_attribute(node) if v is not None]
            if values:
                return _join_all(rec(v) for v in values)
            return UNKNOWN
        if isinstance(node, cst.Call):
            return self._call_dtype(node, depth)
        return UNKNOWN

    def _element_dtype(self, container: cst.BaseExpression, depth: int) -> str:
        """What indexing ``container`` gives: a tensor's own dtype class; for a
        Python list, tuple or comprehension shown in the source, its elements'
        (a list of float16 tensors is a host object, its items are not)."""
        shown = container
        if type(shown) is cst.Name:
            bindings = [b for b in self.scopes.reaching(shown)[:4] if b.kind in ("assign", "walrus")]
            if bindings and bindings[0].value is not None:
                shown = bindings[0].value
        if type(shown) in (cst.List, cst.Tuple, cst.Set):
            items = [e.value for e in shown.elements if type(e) is cst.Element]
            if not items or len(items) != len(shown.elements):
                return UNKNOWN
            return _join_all(self.dtype(v, depth + 1) for v in items[:8])
        if type(shown) in (cst.ListComp, cst.SetComp, cst.GeneratorExp):
            return self.dtype(shown.elt, depth + 1)
        if type(shown) in (cst.Dict, cst.DictComp):
            return UNKNOWN
        kind = self.dtype(container, depth + 1)
        if kind == HOST and type(shown) is cst.Call and (
                type(shown.func) is cst.Name and shown.func.value in ("list", "tuple")
                or self._helper_called(shown) is not None):
            # ``list(x)``; a helper's dict or tuple of results: a Python
            # container of whatever the helper put in it
            return UNKNOWN
        return kind

    def _name_dtype(self, node: cst.Name, depth: int) -> str:
        bindings = self.scopes.reaching(node)
        if not bindings:
            qualified = self.ctx.names.bindings.get(node.value)
            if qualified is not None and qualified.split(".")[0] in _HOST_MODULES:
                return HOST
            return UNKNOWN
        kinds = []
        for b in bindings[:4]:
            if b.kind == "augassign":
                continue  # ``x *= 2`` keeps the dtype class of the binding before it
            if b.kind == "assign" and isinstance(b.value, cst.Name) and b.value.value == "None":
                continue  # ``mask = None``: no tensor (nothing is computed with it)
            kinds.append(self._binding_dtype(b, depth))
            if b.kind in ("assign", "walrus") and b.node is not None:
                break  # the nearest plain assignment decides
        kind = _join_all(kinds)
        if kind == UNKNOWN and len(bindings) == 1 and self._read_as_mask(bindings[0]):
            return INTEGER
        return kind

    def _read_as_mask(self, b: Binding) -> bool:
        """The binding's value is the mask of a ``masked_fill`` (or
        ``masked_fill_``, ``masked_select``, ``masked_scatter``) or the
        condition of ``torch.where`` somewhere in its scope: torch takes only
        a bool tensor there, so it is one (``(mask * 1.0).masked_fill(mask,
        -1e9)``: the product is float32)."""
        for read in self.scopes.reads_of(b):
            up = self.scopes.parent.get(read)
            call = self.scopes.parent.get(up) if type(up) is cst.Arg else None
            if type(call) is not cst.Call or up.star:  # type: ignore[union-attr]
                continue
            position = call.args.index(up)  # type: ignore[arg-type]
            keyword = up.keyword.value if up.keyword is not None else None  # type: ignore[union-attr]
            func = call.func
            if type(func) is cst.Attribute and func.attr.value in _MASK_METHODS and (
                    keyword == "mask" or keyword is None and position == 0) and func.value is not read:
                return True
            if torch_op(self.ctx, call) == "where" and (keyword == "condition" or keyword is None and position == 0) \
                    and (self.ctx.resolve(func) or "").startswith("torch."):
                return True
        return False

    def _binding_dtype(self, b: Binding, depth: int) -> str:
        if b.kind in ("assign", "walrus"):
            if b.value is None:
                return self._unpacked_dtype(b, depth)
            return self.dtype(b.value, depth + 1)
        if b.kind == "augassign":
            return UNKNOWN
        if b.kind == "param":
            if b.annotation is not None:
                text = dotted_name(b.annotation) or ""
                if text in ("int", "float", "bool", "str"):
                    return HOST
            if b.value is not None and self.dtype(b.value, depth + 1) == HOST and number(b.value) is not None:
                return HOST  # a number-valued hyper-parameter (``eps=1e-6``)
            func = self.scopes.parent.get(self.scopes.parent.get(b.node))
            if type(func) is cst.FunctionDef and b.name in self.numpy_params(func):
                return HOST  # ``np.minimum(box2[2], ...)``: the function computes with numpy arrays
            return self._argument_dtype(b, depth)
        if b.kind == "for":
            it = b.value
            if isinstance(it, cst.Call) and isinstance(it.func, cst.Name) and it.func.value in ("range", "enumerate", "zip"):
                return HOST if it.func.value == "range" else UNKNOWN
            return UNKNOWN
        return UNKNOWN

    def numpy_params(self, func: cst.FunctionDef) -> frozenset:
        """The parameters of ``func`` whose values its own numpy calls take
        (``np.maximum(w2 / (h2 + eps), ...)`` with ``w2 = box2[2] - box2[0]``):
        numpy arrays -- or CPU tensors numpy converts -- never a float16
        activation under autocast. Followed through the function's plain
        assignments from the parameter (subscripts, attributes, arithmetic);
        conversions (``np.asarray(t)``) and metadata (``x.shape``) do not count."""
        cached = self._numpy_params.get(func)
        if cached is not None:
            return cached
        self._numpy_params[func] = frozenset()
        names: set = set()
        assigns: List[Tuple[List[str], cst.BaseExpression]] = []
        #: operands of arithmetic: a value computed with a numpy array is one too
        operands: List[Tuple[set, set]] = []
        for node in scope_nodes(func.body):
            if type(node) is cst.Call:
                qualified = self.ctx.resolve(node.func) or ""
                if qualified.split(".")[0] == "numpy" and qualified.rpartition(".")[2] not in _NUMPY_CONVERSIONS:
                    for a in node.args:
                        names.update(_roots(a.value))
            elif type(node) is cst.BinaryOperation and type(node.operator) in _ARITHMETIC:
                operands.append((_roots(node.left), _roots(node.right)))
            elif type(node) is cst.Assign and len(node.targets) == 1:
                target = node.targets[0].target
                if type(target) is cst.Name:
                    assigns.append(([target.value], node.value))
                elif type(target) in (cst.Tuple, cst.List) and type(node.value) in (cst.Tuple, cst.List) \
                        and len(target.elements) == len(node.value.elements):
                    for t, v in zip(target.elements, node.value.elements):
                        if type(t.value) is cst.Name:
                            assigns.append(([t.value.value], v.value))
        imported = self.ctx.names.bindings  # ``np.pi * x``: a module is no array
        names = {n for n in names if n not in imported}
        for _ in range(4):  # locals of locals: a few hops
            grown = False
            for targets, value in assigns:
                if any(t in names for t in targets):
                    new = {n for n in _roots(value) - names if n not in imported}
                    if new:
                        names |= new
                        grown = True
            for left, right in operands:
                for one, other in ((left, right), (right, left)):
                    if one & names:
                        new = {n for n in other - names if n not in imported}
                        if new:
                            names |= new
                            grown = True
            if not grown:
                break
        params = {p.name.value for p in (*func.params.posonly_params, *func.params.params, *func.params.kwonly_params)}
        result = frozenset(names & params)
        self._numpy_params[func] = result
        return result

    def _argument_dtype(self, b: Binding, depth: int) -> str:
        """A parameter holds what every call of its function passes:
        ``self._norm(x.float())`` at each call (Gemma-style RMSNorm) makes
        ``x`` float32 inside ``_norm`` (:meth:`arguments_for`). Unknown when
        no call is seen, more than eight are, or one passes the default."""
        given = self.arguments_for(b)
        if not given:
            return UNKNOWN
        return _join_all([facts.dtype(value, depth + 1) for facts, value in given])

    def arguments_for(self, b: Binding, defaults: bool = False) -> Optional[List[Tuple["Facts", cst.BaseExpression]]]:
        """What every call of a parameter's function passes for it, each with
        the analysis of the file of the call. A private helper (``_name``, not
        a dunder) and a function nested in another are called from this file
        only, and must be named nowhere but in their calls (not handed on as
        a callback, returned or rebound: :meth:`_only_called`); a public
        module-level function from anywhere in the project
        (:meth:`all_calls`: ``angle(x.float())`` in every caller). None
        when no call is seen, more than eight are, or one passes the default
        (its default stands in for it with ``defaults``) or unpacks ``*args``."""
        func = self.scopes.parent.get(self.scopes.parent.get(b.node))
        if type(func) is not cst.FunctionDef or func.name.value.startswith("__"):
            return None
        private = func.name.value.startswith("_") and not self._imported_elsewhere(func)
        if self.scopes.enclosing_function(func) is not None or (
                private and self.scopes.parent.get(func) is self.ctx.module):
            calls: List[Tuple[Facts, cst.Call]] = [(self, c) for c in self._only_called(func) or []]
        elif private:  # a method: ``self._f(x)``, named only so in its class
            here = self.calls_of(func)
            if self._class_mentions(func) != 1 + len(here):
                return None  # also handed on as a value (a callback): not every call is seen
            calls = [(self, c) for c in here]
        elif self.scopes.enclosing_class(func) is not None:
            calls = [(self, c) for c in self._app_method_calls(func) or []]
        else:
            calls = self.all_calls(func) or []
        if not calls or len(calls) > 8:
            return None
        positional = [*func.params.posonly_params, *func.params.params]
        index = next((i for i, p in enumerate(positional) if p is b.node), None)  # None: keyword-only
        # ``self._f(x)``: ``self`` is not among the arguments
        bound = self.scopes.enclosing_class(func) is not None and not _is_static(func)
        out: List[Tuple[Facts, cst.BaseExpression]] = []
        for facts, call in calls:
            if any(a.star for a in call.args):
                return None
            here = index - 1 if bound and index is not None and type(call.func) is cst.Attribute else index
            given = arg(call, here if here is not None and here >= 0 else None, b.name)
            if given is not None:
                out.append((facts, given.value))
            elif defaults and b.value is not None:
                out.append((self, b.value))
            else:
                return None  # the default, or a call this reading does not follow
        return out

    def _call_dtype(self, call: cst.Call, depth: int) -> str:
        rec = lambda n: self.dtype(n, depth + 1)  # noqa: E731
        qualified, method = self.ctx.callee(call)
        if qualified is not None:
            head = qualified.split(".")[0]
            if head in _HOST_MODULES:
                return HOST
            if head != "torch":
                return UNKNOWN
        elif isinstance(call.func, cst.Name):
            builtin = call.func.value
            if builtin in ("float", "int", "len", "bool") and self.ctx.resolve(call.func) is None:
                return HOST  # a Python number, even of a one-element tensor
            if builtin in ("range", "min", "max", "abs", "round", "sum"):
                # builtins: host numbers unless given tensors
                args = [rec(a.value) for a in call.args]
                return HOST if all(a == HOST for a in args) else UNKNOWN
            return self._returned_dtype(self._helper_called(call), depth)
        if method is not None and isinstance(call.func, cst.Attribute) and _is_self(call.func.value):
            # ``self.helper(x)``: a method of this class (a method name says
            # nothing of a tensor op here)
            helper = self._helper_called(call)
            if helper is not None:
                return self._returned_dtype(helper, depth)
        if qualified is not None:
            legacy = _LEGACY_TENSORS.get(qualified.rpartition(".")[2])
            if legacy is not None:  # ``torch.cuda.FloatTensor(B, N)``: the class names the dtype
                return legacy
        op = torch_op(self.ctx, call)
        if op is None:
            return UNKNOWN
        dtype_arg = arg(call, None, "dtype")
        if dtype_arg is not None:
            return self._dtype_value(dtype_arg.value)
        on_method = is_method_call(self.ctx, call)
        if on_method and op in _CAST_METHODS and not call.args:
            return _CAST_METHODS[op]
        if op in ("to", "type") and call.args:
            for a in call.args:
                kind = self._dtype_value(a.value)
                if kind != UNKNOWN:
                    return kind
            if on_method and op == "to" and all(self._is_device(a.value) for a in call.args
                                                if a.keyword is None or a.keyword.value == "device"):
                return rec(call.func.value)  # `.to(device)` moves, it keeps the dtype
            if on_method:
                return UNKNOWN
        if op == "type_as" and call.args:
            return rec(call.args[0].value)
        if op in _INTEGER_OPS:
            return INTEGER
        if op in _WIDE_ONLY_OPS:
            return WIDE
        if op == "arange" and not on_method:
            args = [a for a in call.args if a.keyword is None]
            if all(number(a.value) is not None and float(number(a.value)).is_integer() for a in args):
                return INTEGER
            # without ``dtype=``, arange is int64 for integer bounds and the
            # default dtype (float32) otherwise -- even for a float16 0-dim
            # tensor bound: never a low-precision float
            kinds = [rec(a.value) for a in args]
            if any(isinstance(a.value, cst.Float) for a in args) or WIDE in kinds:
                return WIDE
            return INTEGER
        if op in _FACTORIES and not on_method:
            if op in ("tril", "triu"):
                first = arg(call, 0, "input")
                return rec(first.value) if first is not None else UNKNOWN
            if op == "from_numpy":
                return WIDE  # numpy arrays are float64/float32 (a float16 array is rare)
            if op in ("tensor", "as_tensor", "scalar_tensor"):
                first = arg(call, 0, "data")
                if first is not None and rec(first.value) in (HOST, INTEGER):
                    return WIDE if rec(first.value) == HOST else INTEGER
                return rec(first.value) if first is not None else UNKNOWN
            return WIDE
        if op in _LIKE_FACTORIES:
            base = subject(self.ctx, call)
            return rec(base) if base is not None else UNKNOWN
        if op == "where" and not on_method:
            # ``torch.where(condition, x, y)``: the branches' dtype, not the condition's
            x, y = arg(call, 1, "input"), arg(call, 2, "other")
            if x is None or y is None:
                return INTEGER  # ``torch.where(condition)``: indices
            if number(x.value) is not None and number(y.value) is not None:
                return WIDE if _is_float_literal(x.value) or _is_float_literal(y.value) else INTEGER
            return _promote(rec(x.value), rec(y.value), False)
        if op in _SAME_DTYPE_OPS:
            base = subject(self.ctx, call)
            return rec(base) if base is not None else UNKNOWN
        return UNKNOWN

    def _unpacked_dtype(self, b: Binding, depth: int) -> str:
        """A name unpacked from a call's result (``w, v = torch.linalg.eigh(a)``,
        ``e, v = self._decompose(a)``): WIDE from a decomposition or solver
        (all its results are float32/float64, complex or integer pivots);
        through a helper of this file, its returns' element at that place."""
        stmt = b.node
        if type(stmt) is not cst.Assign or len(stmt.targets) != 1 or type(stmt.value) is not cst.Call:
            return UNKNOWN
        call, target = stmt.value, stmt.targets[0].target
        op = torch_op(self.ctx, call)
        if op in _WIDE_ONLY_OPS:
            return WIDE
        if type(target) not in (cst.Tuple, cst.List):
            return UNKNOWN
        names = [e.value.value if type(e.value) is cst.Name else None for e in target.elements]
        if b.name not in names or any(type(e.value) is cst.StarredElement for e in target.elements):
            return UNKNOWN
        index = names.index(b.name)
        if op in _SAME_DTYPE_PARTS or op in VALUES_AND_INDICES and len(names) == 2:
            # ``std, mean = torch.std_mean(x)``, ``a, b = x.chunk(2)``: x's dtype;
            # ``values, indices = x.max(-1)``: x's dtype, then integers
            if op in VALUES_AND_INDICES and index == 1:
                return INTEGER
            source = subject(self.ctx, call)
            return self.dtype(source, depth + 1) if source is not None else UNKNOWN
        helper = self._helper_called(call)
        returns = self.scopes.returns(helper) if helper is not None else []
        if not returns or not all(type(r) is cst.Tuple and len(r.elements) == len(names) for r in returns):
            return UNKNOWN
        return _join_all(self.dtype(r.elements[index].value, depth + 1) for r in returns[:4])

    def _helper_called(self, call: cst.Call) -> Optional[cst.FunctionDef]:
        """The function of this file a call runs: ``helper(x)`` on a name no
        import binds, or ``self.helper(x)``; None otherwise."""
        func = call.func
        if type(func) is cst.Name and self.ctx.resolve(func) is None:
            return self.scopes.function_named(func.value, call)
        if type(func) is cst.Attribute and _is_self(func.value):
            return self.scopes.function_named(func.attr.value, call)
        return None

    def _returned_dtype(self, func: Optional[cst.FunctionDef], depth: int) -> str:
        """The dtype class a function of this file returns (all its returns agree)."""
        returns = self.scopes.returns(func) if func is not None else []
        return _join_all(self.dtype(r, depth + 1) for r in returns[:4]) if returns else UNKNOWN

    def _is_device(self, node: cst.BaseExpression, depth: int = 0) -> bool:
        """A device, not a dtype or a tensor: ``x.device``, ``"cuda"``,
        ``torch.device(...)``, a name assigned one of these."""
        if isinstance(node, cst.Attribute):
            return node.attr.value == "device"
        if isinstance(node, cst.SimpleString):
            text = node.evaluated_value if isinstance(node.evaluated_value, str) else ""
            return text.split(":")[0] in ("cpu", "cuda", "mps", "xpu", "meta")
        if isinstance(node, cst.Call):
            return (self.ctx.resolve(node.func) or "") == "torch.device"
        if isinstance(node, cst.Name) and depth < 3:
            bindings = self.scopes.reaching(node)[:1]
            return bool(bindings) and bindings[0].kind == "assign" and bindings[0].value is not None and \
                self._is_device(bindings[0].value, depth + 1)
        return False

    def _dtype_value(self, node: cst.BaseExpression) -> str:
        """The dtype named by a ``dtype=`` argument (``torch.float32``, ``x.dtype``)."""
        qualified = self.ctx.resolve(node) or ""
        if qualified.startswith("torch."):
            return _TORCH_DTYPES.get(qualified[len("torch."):], UNKNOWN)
        if qualified.startswith(("numpy.", "np.")):
            return WIDE if "float" in qualified else INTEGER
        if isinstance(node, cst.Attribute) and node.attr.value == "dtype":
            return self.dtype(node.value)
        if isinstance(node, cst.SimpleString):
            text = (node.evaluated_value or "") if isinstance(node.evaluated_value, str) else ""
            return _TORCH_DTYPES.get(text.replace("torch.", ""), UNKNOWN)
        if isinstance(node, cst.Name) and node.value in ("float", "int", "bool"):
            return WIDE if node.value == "float" else INTEGER
        if isinstance(node, cst.Name):  # ``dtype = torch.bfloat16`` earlier in the function
            bindings = self.scopes.reaching(node)[:4]
            if not bindings:  # imported: ``_GLOBAL_DTYPE = torch.float64`` in a module of the project
                named = self.project.imported_dtype(node)
                return _TORCH_DTYPES.get(named, UNKNOWN) if named is not None else UNKNOWN
            # a parameter's default is not a fact: a caller may pass another dtype
            if bindings and all(b.kind in ("assign", "walrus") and b.value is not None
                                and not isinstance(b.value, cst.Name) for b in bindings):
                return _join_all(self._dtype_value(b.value) for b in bindings)
        return UNKNOWN

    def can_be_half(self, node: cst.BaseExpression) -> bool:
        """Whether a value may hold float16 here (the low-precision dtype
        whose range the overflow and underflow rules are about: an explicit
        bfloat16 tensor has float32's range)."""
        if self.dtype(node) in (WIDE, INTEGER, HOST, BF16):
            return False
        return not self.in_float32_region(node)

    def in_float32_region(self, node: cst.CSTNode) -> bool:
        """Inside ``autocast(enabled=False)``, or a function decorated to run in
        float32 (``@force_fp32``, ``@custom_fwd(cast_inputs=torch.float32)``,
        ``@autocast(enabled=False)``), or in the branch of ``if x.dtype ==
        torch.float16: ... else: ...`` that float16 does not take."""
        child: cst.CSTNode = node
        for up in self.scopes.ancestors(node):
            if isinstance(up, cst.If) and self._half_branch_elsewhere(up, child):
                return True
            child = up
            if isinstance(up, cst.With):
                if any(_disables_autocast(self.ctx, item.item) for item in up.items):
                    return True
            elif isinstance(up, cst.FunctionDef):
                for dec in up.decorators:
                    text = self.ctx.code(dec.decorator)
                    if _FP32_DECORATORS.search(text) or _disables_autocast(self.ctx, dec.decorator):
                        return True
                    if "custom_fwd" in text and "float32" in text:
                        return True
        return False

    def _half_branch_elsewhere(self, branch: cst.If, child: cst.CSTNode) -> bool:
        """``child`` is the part of ``branch`` that float16 values never reach:
        the ``else`` of ``if x.dtype == torch.float16`` (or ``in (float16, ...)``),
        the body of ``if x.dtype != torch.float16``."""
        test = branch.test
        if not (isinstance(test, cst.Comparison) and len(test.comparisons) == 1):
            return False
        left, target = test.left, test.comparisons[0]
        if not (isinstance(left, cst.Attribute) and left.attr.value == "dtype"):
            return False
        names = [target.comparator] if not isinstance(target.comparator, (cst.Tuple, cst.List, cst.Set)) else [
            e.value for e in target.comparator.elements]
        if not any((self.ctx.resolve(n) or "") in ("torch.float16", "torch.half") for n in names):
            return False
        if isinstance(target.operator, (cst.Equal, cst.In, cst.Is)):
            return child is branch.orelse
        if isinstance(target.operator, (cst.NotEqual, cst.NotIn, cst.IsNot)):
            return child is branch.body
        return False

    # -- ranges -------------------------------------------------------------
    def range_facts(self, node: cst.BaseExpression) -> FrozenSet[str]:
        return value_facts(self.ctx, node, _Lookup(self, node))

    def bounded_above(self, node: cst.BaseExpression) -> bool:
        facts = self.range_facts(node)
        return UPPER in facts or NONPOS in facts or self.is_entropy(node)

    def is_entropy(self, node: cst.BaseExpression) -> bool:
        """``-sum(p * log(p))``, ``-(p * log(p + eps)).sum(-1)``,
        ``-sum(xlogy(p, p))`` (followed through one local name): an entropy,
        at most log(K) for K classes, so its exp (a perplexity) stays below K.
        The pattern -- the same tensor on both sides -- is taken to be a
        normalised distribution (documented in NL002)."""
        node = _through_local(self, node)
        if not (isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus)):
            return False
        total = _through_local(self, node.expression)
        if not isinstance(total, cst.Call) or torch_op(self.ctx, total) not in ("sum", "mean", "nansum"):
            return False
        term = subject(self.ctx, total)
        if term is None:
            return False
        term = _through_local(self, term)
        code = self.ctx.code
        if isinstance(term, cst.Call) and torch_op(self.ctx, term) == "xlogy":
            a, b = subject(self.ctx, term), arg(term, 0 if is_method_call(self.ctx, term) else 1, "other")
            return a is not None and b is not None and code(a) == code(b.value)
        if isinstance(term, cst.BinaryOperation) and isinstance(term.operator, cst.Multiply):
            for p, lg in ((term.left, term.right), (term.right, term.left)):
                if isinstance(lg, cst.Call) and torch_op(self.ctx, lg) in ("log", "log2"):
                    inner = subject(self.ctx, lg)
                    if isinstance(inner, cst.BinaryOperation) and isinstance(inner.operator, cst.Add):
                        inner = inner.left if number(inner.right) is not None else inner
                    if inner is not None and code(inner) == code(p):
                        return True
        return False

    # -- zeros ---------------------------------------------------------------
    def zero_case(self, node: cst.BaseExpression, depth: int = 0) -> str:
        """How a value that a guard protects (a divisor, a log argument)
        reaches exactly 0 in float16: ``ORDINARY`` when ordinary inputs get
        there, ``HALF_ONLY`` when they do only where the op that makes it runs
        in float16 (a model cast to half), ``EDGE`` when only a degenerate
        input does.

        ORDINARY: a sigmoid output underflows to 0 once its logit is below
        -17.3 (float16's smallest subnormal is 5.96e-8), and ``1 - p`` rounds
        to 0 once ``p > 0.9995`` (a sigmoid of 7.6); selections, products and
        clamps of such values stay ordinary. A parameter of a function of this
        file is ordinary when a call in the file passes an ordinary argument.

        HALF_ONLY: a softmax output, an ``exp`` of a non-positive value, a
        helper or layer that returns probabilities, and a sigmoid of a sum or
        a softmax: CUDA/MPS autocast computes ``softmax``, ``exp`` and ``sum``
        in float32 (NUMERICS: Autocast), where the guard works; only a model
        cast to half underflows them. Where the code shows nothing, a
        parameter or variable named like a probability (``probs``, ``p_attn``,
        ``*_prob``) counts as one: the only name heuristic here.

        EDGE: everything else -- norms, variances, sums and means (a sum of
        probabilities is about 1), counts (an all-padding row), differences of
        activations, a largest probability (at least 1/K): 0 needs a zero or
        constant row.

        WEIGHT: a learned parameter itself or ``exp`` of one (a Snake
        activation's ``alpha``, a ``log_scale``): it reaches the bound only for
        a trained value far from its initialisation (exp(w) < 1.5e-5 needs
        w < -11), which is nothing the code shows."""
        if depth > 8:
            return EDGE
        rec = lambda n: self.zero_case(n, depth + 1)  # noqa: E731
        node = look_through(self.ctx, node, _KEEPS_VALUES)
        if isinstance(node, cst.Name):
            named = _PROB_NAME.match(node.value) is not None
            for b in self.scopes.reaching(node)[:1]:
                if b.kind in ("assign", "walrus") and b.value is not None:
                    found = rec(b.value)
                    if found == EDGE and named and self._opaque(b.value):
                        return HALF_ONLY  # the code shows nothing: the name tells
                    return found
                if b.kind == "param":
                    found = self._param_zero_case(b, depth)
                    return HALF_ONLY if found == EDGE and named else found
            return HALF_ONLY if named else EDGE
        if isinstance(node, cst.Attribute):
            if _PROB_NAME.match(node.attr.value):
                return HALF_ONLY
            return WEIGHT if self._learned_weight(node) else EDGE
        if isinstance(node, cst.BinaryOperation):
            op = node.operator
            if isinstance(op, cst.Multiply):
                return _surest(rec(node.left), rec(node.right))
            if isinstance(op, cst.Divide):
                return rec(node.left)
            if isinstance(op, cst.Subtract) and number(node.left) == 1:
                return rec(node.right)  # 1 - p rounds to 0 once p is within 4.9e-4 of 1
            return EDGE
        if isinstance(node, cst.Call):
            if _layer_kind(self, node) == PROBABILITY:
                # nn.Sigmoid stays float16 under autocast; nn.Softmax/Softmin do not
                return ORDINARY if _layer_classes(self, node) == {"Sigmoid"} else HALF_ONLY
            op = torch_op(self.ctx, node)
            if op is None:
                summary = self.summary_of_call(node)
                if summary is not None and summary.returns == PROBABILITY:
                    return HALF_ONLY  # a helper's softmax or sigmoid: the summary does not say which
            if op in ("sigmoid", "sigmoid_"):
                base = subject(self.ctx, node)
                return HALF_ONLY if base is not None and _made_in_float32_by_autocast(self, base) else ORDINARY
            if op in _UNDERFLOWING:
                return HALF_ONLY
            if op in ("exp", "exp_", "exp2"):
                base = subject(self.ctx, node)
                if base is not None and NONPOS in self.range_facts(base):
                    return HALF_ONLY
                return WEIGHT if base is not None and rec(base) == WEIGHT else EDGE
            if op in _SELECTS_VALUES or op in ("clamp", "clamp_", "clip", "clamp_min", "clamp_min_", "clamp_max", "mul", "mul_"):
                base = subject(self.ctx, node)
                return rec(base) if base is not None else EDGE
            return EDGE
        return EDGE

    def _learned_weight(self, node: cst.Attribute) -> bool:
        """``self.alpha`` where the class sets ``self.alpha = nn.Parameter(...)``
        (every assignment the class shows)."""
        values = [v for _, v in self.scopes.self_attribute(node)]
        return bool(values) and all(
            type(v) is cst.Call and (self.ctx.resolve(v.func) or dotted_name(v.func) or "").split(".")[-1] == "Parameter"
            for v in values
        )

    def _opaque(self, value: cst.BaseExpression) -> bool:
        """The code shows nothing of what ``value`` is: a call of something
        that is not a torch op (a model, a helper of another module), an
        attribute or an indexing of one."""
        value = look_through(self.ctx, value, _KEEPS_VALUES)
        if isinstance(value, cst.Call):
            return torch_op(self.ctx, value) is None
        return isinstance(value, (cst.Name, cst.Attribute, cst.Subscript))

    def _param_zero_case(self, b: Binding, depth: int) -> str:
        """A parameter of a module-level function: ordinary when a call of the
        function in this file passes an ordinary argument for it."""
        func = self.scopes.enclosing_function(b.node)
        if func is None or self.scopes.enclosing_class(func) is not None:
            return EDGE
        params = [p.name.value for p in func.params.params]
        if b.name not in params:
            return EDGE
        position = params.index(b.name)
        seen, best = 0, EDGE
        for reads in self.scopes.reads.values():
            for read in reads.get(func.name.value, ()):
                call = self.scopes.parent.get(read)
                if not (isinstance(call, cst.Call) and call.func is read):
                    continue
                found = self.scopes.reaching(read)
                if not found or found[0].node is not func:
                    continue
                seen += 1
                if seen > 40:
                    return best
                passed = arg(call, position, b.name)
                if passed is not None:
                    best = _surest(best, self.zero_case(passed.value, depth + 1))
                    if best == ORDINARY:
                        return ORDINARY
        return best

    # -- where values come from ------------------------------------------
    def origin(self, node: cst.BaseExpression, depth: int = 0) -> str:
        """ACTIVATION, HOST or UNKNOWN (see the module docstring)."""
        if depth > 16:
            return UNKNOWN
        rec = lambda n: self.origin(n, depth + 1)  # noqa: E731
        if self.dtype(node) in (HOST,):
            return HOST
        if isinstance(node, cst.BinaryOperation):
            if isinstance(node.operator, cst.MatrixMultiply):
                return ACTIVATION
            left, right = rec(node.left), rec(node.right)
            if ACTIVATION in (left, right):
                return ACTIVATION
            return HOST if left == right == HOST else UNKNOWN
        if isinstance(node, cst.UnaryOperation):
            return rec(node.expression)
        if isinstance(node, cst.Subscript):
            return rec(node.value)
        if isinstance(node, cst.Name):
            bindings = self.scopes.reaching(node)
            for b in bindings[:1]:
                if b.kind in ("assign", "walrus"):
                    # a name unpacked from a tuple (``a, b = f(x).chunk(2)``) is part of its value
                    value = b.value if b.value is not None else getattr(b.node, "value", None)
                    return rec(value) if value is not None else UNKNOWN
                if b.kind == "param" and self.is_forward_param(b):
                    return ACTIVATION
            return UNKNOWN
        if isinstance(node, cst.Call):
            op = torch_op(self.ctx, node)
            if op in _ACTIVATION_OPS:
                return ACTIVATION
            func = node.func
            if isinstance(func, cst.Attribute) and _is_self(func.value) and self.is_layer_attribute(func):
                return ACTIVATION
            if op in _SAME_DTYPE_OPS and op not in ("exp", "sigmoid", "tanh", "softmax", "log_softmax"):
                base = subject(self.ctx, node)
                if base is not None:
                    return rec(base)
            return UNKNOWN
        return UNKNOWN

    def is_score(self, node: cst.BaseExpression, depth: int = 0) -> bool:
        """A dot product of activations: ``q @ k.T``, ``torch.matmul``/``bmm``/
        ``einsum``, possibly scaled (``(q @ k.T) * scale``, ``/ math.sqrt(d)``)
        or reshaped, followed through local names. Scores over d features
        reach magnitudes above 11 for ordinary inputs."""
        if depth > 8:
            return False
        if _transposed_here(node) and _transposed_back(self.ctx, node):
            return False
        node = look_through(self.ctx, node, _KEEPS_VALUES)
        if isinstance(node, cst.BinaryOperation):
            if isinstance(node.operator, cst.MatrixMultiply):
                return self._transposed(node.right) and not _transposed_here(node.left)
            if isinstance(node.operator, (cst.Multiply, cst.Divide)):
                return self.is_score(node.left, depth + 1) or (
                    isinstance(node.operator, cst.Multiply) and self.is_score(node.right, depth + 1))
            return False
        if isinstance(node, cst.Name):
            value = self.scopes.assigned_value(node)
            return value is not None and self.is_score(value, depth + 1)
        if isinstance(node, cst.Call):
            op = torch_op(self.ctx, node)
            if op == "einsum":
                return True
            if op in _SCORE_OPS:
                # q @ k.T: a product with a transposed activation (attn @ v, h @ W are not scores);
                # A.T @ B.T is (B @ A).T, no more a score than B @ A (an alignment applied to values)
                positional = [a.value for a in node.args if not a.keyword]
                if positional and _transposed_here(positional[0]):
                    return False
                return any(self._transposed(v) for v in positional[1:])
            if op in ("mul", "div", "mul_", "div_"):
                base = subject(self.ctx, node)
                return base is not None and self.is_score(base, depth + 1)
        return False

    def _transposed(self, node: cst.BaseExpression, depth: int = 0) -> bool:
        """``k.T``, ``k.mT``, ``k.transpose(-2, -1)``, ``k.permute(...)``,
        ``k.t()`` (one local name followed)."""
        if isinstance(node, cst.Attribute) and node.attr.value in ("T", "mT", "H", "mH"):
            return True
        if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute):
            if node.func.attr.value in ("transpose", "permute", "t", "swapaxes", "swapdims", "movedim"):
                return True
            if node.func.attr.value in _KEEPS_VALUES and depth < 4:
                return self._transposed(node.func.value, depth + 1)
        if isinstance(node, cst.Name) and depth < 4:
            value = self.scopes.assigned_value(node)
            return value is not None and self._transposed(value, depth + 1)
        return False

    def is_layer_attribute(self, node: cst.Attribute) -> bool:
        """``self.fc`` where the class assigns ``self.fc = nn.Linear(...)`` (or
        any ``nn.*`` layer / ``Sequential``)."""
        for _, value in self.scopes.self_attribute(node):
            if isinstance(value, cst.Call):
                qualified = self.ctx.resolve(value.func) or ""
                if qualified.startswith("torch.nn.") and not qualified.startswith("torch.nn.functional"):
                    short = qualified.rsplit(".", 1)[-1]
                    if short not in ("Parameter", "ParameterList", "ParameterDict", "Identity", "Dropout"):
                        return True
        return False

    def is_forward_param(self, b: Binding) -> bool:
        """A parameter of ``forward`` of an ``nn.Module`` subclass (an activation)."""
        func = b.node
        while func is not None and not isinstance(func, cst.FunctionDef):
            func = self.scopes.parent.get(func)
        if not isinstance(func, cst.FunctionDef) or func.name.value != "forward":
            return False
        cls = self.scopes.enclosing_class(func)
        return cls is not None and self.is_module_class(cls) and b.name != "self"

    def is_module_class(self, cls: cst.ClassDef, depth: int = 0) -> bool:
        cached = self._module_class.get(cls)
        if cached is not None:
            return cached
        self._module_class[cls] = False
        result = False
        for base in cls.bases:
            name = dotted_name(base.value) or ""
            if _MODULE_BASE.search(name):
                result = True
                break
            if isinstance(base.value, cst.Name) and depth < 8:
                for b in self.scopes.bindings.get(self.scopes.module, {}).get(name, []):
                    if isinstance(b.node, cst.ClassDef) and self.is_module_class(b.node, depth + 1):
                        result = True
        self._module_class[cls] = result
        return result

    # -- gradients ----------------------------------------------------------
    def grad_flows(self, node: cst.CSTNode, depth: int = 0) -> bool:
        """False where no gradient can flow: inside ``with torch.no_grad()`` /
        ``inference_mode()``, or a function decorated with them; in a method
        of a class whose ``__call__`` runs without gradients (an inference
        pipeline); in a method of a plain data class (not a module, no
        ``forward``/``__call__``) that updates its own tensors in place (boxes
        scaled in place); in ``forward``/``backward`` of a
        ``torch.autograd.Function`` (differentiated by its own ``backward``) and
        in an op's decomposition or reference implementation
        (``@register_decomposition(aten.op)``, ``@register_lowering``, a
        ``*_reference`` maker: compilers trace it below autograd, which
        differentiates the op by its own derivative formula), and in a
        distribution's parameter-dependent support
        (``@constraints.dependent_property``: bounds that are only compared);
        in a private helper (``_name``), or a function of a program (a
        ``__main__`` block), that this file calls only where no gradient
        flows, and in a public function whose every call in the project runs
        without gradient or only compares its result (but inside ``with
        torch.enable_grad():`` gradients flow, whatever surrounds it); when
        the value is only read as integers or Python numbers (``.long()``, ``floor``, ``round``, ``.item()``) or every use ends in
        a comparison or an index (``no_gradient_escapes``); and -- a name
        heuristic where nothing else decides -- in functions named like
        feature extraction, pre/post-processing or metrics, in
        ``feature_extraction_*``/``processing_*``/``metrics`` modules and in
        ``data``/``dataset(s)``/``dataloaders`` and ``metrics`` folders (data pipelines and evaluation, as
        a ``metrics.py`` module is; a ``transforms`` folder may hold
        differentiable geometry, so it does not count), and in a data
        transform class (:meth:`_data_transform`)."""
        if _data_code(self.ctx.path_parts):
            return False
        child: cst.CSTNode = node
        method: Optional[cst.FunctionDef] = None  # the function directly in the class met next
        for up in self.scopes.ancestors(node):
            if isinstance(up, cst.If) and self._half_branch_elsewhere(up, child):
                return True
            child = up
            if isinstance(up, cst.With):
                if any(self._enables_grad(item.item) for item in up.items):
                    break  # ``with torch.enable_grad():`` inside a no-grad method: gradients flow here
                for item in up.items:
                    if self._no_grad(item.item):
                        return False
            elif isinstance(up, cst.FunctionDef):
                method = up
                if _NO_GRAD_FUNCTION.search(up.name.value):
                    return False
                for dec in up.decorators:
                    if self._no_grad(dec.decorator) or _registers_decomposition(dec.decorator):
                        return False
                if depth < 3 and self._called_only_without_grad(up, depth):
                    return False
                if self.returns_only_numbers(up):
                    return False
            elif isinstance(up, cst.ClassDef):
                if self._inference_class(up) or self._data_class_update(up, node) or self._data_transform(up):
                    return False
                if method is not None and self._custom_function_method(up, method):
                    return False
                method = None
        if isinstance(node, cst.BaseExpression):
            uses = self.consumers(node)
            if uses and all(u in _NUMBER_READS for u in uses):
                return False
            if ("argm" in self.ctx.source or "argsort" in self.ctx.source or ".indices" in self.ctx.source) \
                    and self.no_gradient_escapes(node):
                return False
        return True

    def returns_only_numbers(self, func: cst.FunctionDef) -> bool:
        """A function whose results are Python numbers, booleans or
        comparisons only (``return diff.item() <= tol``, ``return False``,
        ``return correct.sum().item() / n``) and that keeps nothing else:
        it assigns only local names, calls nothing for its effect (``print``
        and logging aside), never differentiates, yields, or declares
        ``global``/``nonlocal``. No gradient computed inside it, nested
        functions included, reaches anything outside (openfold's early-stop
        test of its recycled positions)."""
        if func not in self._number_functions:
            self._number_functions[func] = self._numbers_out(func)
        return self._number_functions[func]

    def _numbers_out(self, func: cst.FunctionDef) -> bool:
        body = self.ctx.code(func.body)
        if "backward" in body or "autograd" in body or "yield" in body or not isinstance(func.body, cst.IndentedBlock):
            return False
        returns: List[cst.Return] = []
        assigned: Dict[str, List[cst.BaseExpression]] = {}
        for node in subtree(func.body):
            if isinstance(node, (cst.Global, cst.Nonlocal, cst.Yield, cst.Await)):
                return False
            if isinstance(node, cst.Return):
                if self.scopes.enclosing_function(node) is not func:
                    continue  # a nested function's result stays inside this one
                if node.value is None:
                    return False
                returns.append(node)
            elif isinstance(node, cst.Expr) and isinstance(node.value, cst.Call):
                if last_name(node.value.func) not in _LOGGING_CALLS:
                    return False
            elif isinstance(node, (cst.AugAssign, cst.AnnAssign)):
                if not isinstance(node.target, cst.Name):
                    return False
            elif isinstance(node, cst.Assign):
                for target in node.targets:
                    if not isinstance(target.target, cst.Name):
                        if not (isinstance(target.target, (cst.Tuple, cst.List)) and all(
                                isinstance(e.value, cst.Name) for e in target.target.elements)):
                            return False
                    else:
                        assigned.setdefault(target.target.value, []).append(node.value)
            elif isinstance(node, (cst.For, cst.With)):
                names = [node.target] if isinstance(node, cst.For) else [
                    i.asname.name for i in node.items if i.asname is not None]
                if any(not isinstance(n, (cst.Name, cst.Tuple)) for n in names):
                    return False
        return bool(returns) and all(_python_number(r.value, assigned, 0) for r in returns)

    def _called_only_without_grad(self, func: cst.FunctionDef, depth: int) -> bool:
        """A private helper (``_name``, not a dunder), or a function of a
        program (a file with an ``if __name__ == "__main__":`` block), whose
        every call in this file runs where no gradient flows (``with
        torch.no_grad():``, a no-grad function). Other modules do not call a
        private name (unless the project shows they import it:
        :meth:`_imported_elsewhere`), nor, as a rule, the helpers of a program (a metric
        script's ``slerp``). A public module-level function counts when every
        call of it in the project (:meth:`all_calls`) runs without gradient
        or only compares or indexes its result (an angle tested against a
        threshold)."""
        name = func.name.value
        if name.startswith("__"):
            return False
        if not (name.startswith("_") or self.ctx.main_block) or self._imported_elsewhere(func):
            if self._called_by_data_code(func, depth):
                return True
            every = self.all_calls(func)
            return bool(every) and all(not facts.grad_flows(call, depth + 1) or facts.no_gradient_escapes(call)
                                       for facts, call in every)
        calls = self.calls_of(func)
        return bool(calls) and all(not self.grad_flows(call, depth + 1) for call in calls)

    def _called_by_data_code(self, func: cst.FunctionDef, depth: int) -> bool:
        """A public module-level function that only data-pipeline and
        metrics modules of the project call (:func:`_data_code`, by their
        paths: no need to read them, however many they are), and whose calls
        in this file all run without gradient (nerfstudio's camera utilities,
        called by its dataparsers). Test callers do not count."""
        seen = self._seen_callers(func)
        if seen is None:
            return False
        here, found = seen
        roots = self.ctx.project.roots
        return bool(found) and all(_data_code(parts_below(other, roots)) for other, *_ in found) and all(
            not self.grad_flows(call, depth + 1) for call in here)

    def _custom_function_method(self, cls: cst.ClassDef, member: cst.FunctionDef) -> bool:
        """``forward`` / ``setup_context`` / ``backward`` of a
        ``torch.autograd.Function``: autograd runs the forward without
        recording a graph and differentiates with the class's own
        ``backward``, which itself records none (unless a double backward
        asks for ``create_graph``)."""
        if member.name.value not in ("forward", "setup_context", "backward"):
            return False
        for c in self.safeguards.lineage(cls):
            for base in c.bases:
                qualified = self.ctx.resolve(base.value) or dotted_name(base.value) or ""
                if qualified in ("torch.autograd.Function", "torch.autograd.function.Function") or (
                        qualified.endswith("autograd.Function")):
                    return True
        return False

    def _inference_class(self, cls: cst.ClassDef) -> bool:
        for c in self.safeguards.lineage(cls):
            for b in self.scopes.bindings.get(c, {}).get("__call__", []):
                if isinstance(b.node, cst.FunctionDef) and any(self._no_grad(d.decorator) for d in b.node.decorators):
                    return True
        return False

    def _data_transform(self, cls: cst.ClassDef) -> bool:
        """A data transform: a class that is not a module and derives from a
        ``*Transform`` base (PyG's ``BaseTransform``, MONAI's ``MapTransform``,
        albumentations' ``DualTransform``), a name heuristic where nothing
        else decides. It prepares samples for a dataset: no gradient flows
        through it. (kornia's and torchgeo's augmentations are modules.)"""
        return not self.is_module_class(cls) and any(
            _TRANSFORM_BASE.search(dotted_name(b.value) or "") for b in cls.bases if b.keyword is None)

    def _data_class_update(self, cls: cst.ClassDef, node: cst.CSTNode) -> bool:
        if self.is_module_class(cls) or any(
            name in self.scopes.bindings.get(cls, {}) for name in ("forward", "__call__", "backward")
        ):
            return False
        func = self.scopes.enclosing_function(node)
        if func is None or self.scopes.enclosing_class(func) is not cls:
            return False
        for n, _ in iter_tree(func.body):
            target = n.target if isinstance(n, cst.AugAssign) else None
            if isinstance(n, cst.Assign) and len(n.targets) == 1:
                target = n.targets[0].target
            while isinstance(target, cst.Subscript):
                target = target.value
                if isinstance(target, cst.Attribute) and _is_self(target.value):
                    return True
            if isinstance(n, cst.AugAssign) and isinstance(target, cst.Attribute) and _is_self(target.value):
                return True
        return False

    def _grad_mode(self, node: cst.BaseExpression) -> Optional[bool]:
        """What a context manager or decorator sets gradients to: False for
        ``no_grad``/``inference_mode``/``set_grad_enabled(False)``, True for
        ``enable_grad``/``set_grad_enabled(True)``, None for anything else."""
        target = node.func if isinstance(node, cst.Call) else node
        short = (self.ctx.resolve(target) or dotted_name(target) or "").rsplit(".", 1)[-1]
        if short in _NO_GRAD:
            return False
        if short == "enable_grad":
            return True
        if short == "set_grad_enabled" and isinstance(node, cst.Call) and node.args:
            value = node.args[0].value
            if isinstance(value, cst.Name) and value.value in ("True", "False"):
                return value.value == "True"
        return None

    def _no_grad(self, node: cst.BaseExpression) -> bool:
        return self._grad_mode(node) is False

    def _enables_grad(self, node: cst.BaseExpression) -> bool:
        return self._grad_mode(node) is True

    # -- where values go ----------------------------------------------------
    def at_most(self, numerator: cst.BaseExpression, bound: cst.BaseExpression) -> bool:
        """``|numerator| <= bound`` for every input, elementwise: the bound is a
        norm or an absolute maximum of the numerator (``x / x.norm()``,
        ``x / x.abs().amax()``), or the range a min-shifted value is divided
        by (``(d - d.min()) / (d.max() - d.min())``). Such a quotient is at most
        1, whatever the guard under the bound."""
        numerator, bound = self._local(numerator), self._local(bound)
        base = self._reduced_magnitude(bound)
        if base is not None:
            inner = self._local(numerator)
            while True:
                if _same(inner, base):
                    return True
                if type(inner) is cst.Subscript:  # an element of it
                    inner = self._local(inner.value)
                elif type(inner) is cst.Call and torch_op(self.ctx, inner) == "abs":
                    inner = self._local(subject(self.ctx, inner)) if subject(self.ctx, inner) is not None else None
                else:
                    return False
                if inner is None:
                    return False
        if (type(numerator) is cst.BinaryOperation and type(bound) is cst.BinaryOperation
                and type(numerator.operator) is cst.Subtract and type(bound.operator) is cst.Subtract
                and _same(self._local(numerator.right), self._local(bound.right))):
            low, high = self._local(bound.right), self._local(bound.left)
            value = self._local(numerator.left)
            return self._reduction_of(low, ("min", "amin"), value) and self._reduction_of(high, ("max", "amax"), value)
        return False

    def _local(self, node: Optional[cst.BaseExpression]) -> Optional[cst.BaseExpression]:
        """A local name's single assigned value (one hop), else the node."""
        if type(node) is cst.Name:
            bindings = self.scopes.reaching(node)
            if len(bindings) == 1 and bindings[0].kind == "assign" and bindings[0].value is not None:
                return bindings[0].value
        return node

    def _reduced_magnitude(self, node: Optional[cst.BaseExpression]) -> Optional[cst.BaseExpression]:
        """``N`` where ``node`` is a norm of N or the maximum of ``|N|``."""
        node = self._local(node)
        if type(node) is not cst.Call:
            return None
        op = torch_op(self.ctx, node)
        inner = subject(self.ctx, node)
        if inner is None:
            return None
        if op in ("norm", "vector_norm"):
            return self._local(inner)
        if op in ("max", "amax"):
            inner = self._local(inner)
            if type(inner) is cst.Call and torch_op(self.ctx, inner) == "abs":
                base = subject(self.ctx, inner)
                return self._local(base) if base is not None else None
        return None

    def _reduction_of(self, node: Optional[cst.BaseExpression], ops, value: Optional[cst.BaseExpression]) -> bool:
        """``node`` is ``value.min()``-like (one of ``ops``) of ``value`` itself."""
        node = self._local(node)
        if type(node) is cst.Subscript or (type(node) is cst.Attribute and node.attr.value == "values"):
            node = self._local(node.value)  # ``x.min(dim)[0]``, ``x.min(dim).values``
        if type(node) is not cst.Call or torch_op(self.ctx, node) not in ops:
            return False
        inner = subject(self.ctx, node)
        return inner is not None and _same(self._local(inner), value)

    def consumers(self, node: cst.BaseExpression) -> List[str]:
        """The operations (short names) that consume the value of ``node``:
        the call it is the receiver or first argument of, or -- when it is
        assigned to a name -- the calls that read that name afterwards in the
        same scope. ``"return"`` when it leaves the function, ``"store"`` when
        it is written into another container."""
        out: List[str] = []
        seen: Set[cst.CSTNode] = set()
        self._consumers_of(node, out, seen, 0)
        return out

    def _consumers_of(self, node: cst.CSTNode, out: List[str], seen: Set[cst.CSTNode], depth: int) -> None:
        if depth > 4 or node in seen:
            return
        seen.add(node)
        parent = self.scopes.parent
        up = parent.get(node)
        # climb through wrappers that keep the value
        while isinstance(up, (cst.Arg, cst.Subscript, cst.SubscriptElement, cst.Index)) and not (
            isinstance(up, cst.Subscript) and up.value is not node
        ):
            node, up = up, parent.get(up)
            if isinstance(up, cst.Call):
                break
        if isinstance(up, cst.Attribute) and up.value is node:
            call = parent.get(up)
            if isinstance(call, cst.Call) and call.func is up:
                out.append(up.attr.value)
                self._consumers_of(call, out, seen, depth + 1) if up.attr.value.endswith("_") else None
                return
            out.append(up.attr.value)
            return
        if isinstance(up, cst.Call):
            op = torch_op(self.ctx, up) or (dotted_name(up.func) or "").rsplit(".", 1)[-1] or "call"
            out.append(op)
            return
        if isinstance(up, cst.Return):
            out.append("return")
            return
        if isinstance(up, cst.Assign):
            for target in up.targets:
                t = target.target
                if isinstance(t, cst.Name):
                    for read in self.scopes.reads_of_statement(up, t.value):
                        self._consumers_of(read, out, seen, depth + 1)
                else:
                    out.append("store")
            return
        if isinstance(up, cst.BinaryOperation):
            out.append("arith")
            # scaling keeps the value's role: `e * mask` then summed is still
            # a summed exp (a sum or difference with other terms is not)
            if isinstance(up.operator, cst.Multiply):
                self._consumers_of(up, out, seen, depth + 1)
            return
        out.append("other")

    def only_for_empty(self, node: cst.CSTNode) -> bool:
        """``node`` runs only for an empty tensor: in the body of
        ``if x.numel() == 0:`` (or ``not x.numel()``): no element can overflow."""
        child = node
        for up in self.scopes.ancestors(node):
            if isinstance(up, cst.If) and child is up.body and _tests_empty(up.test):
                return True
            if isinstance(up, SCOPE_NODES):
                return False
            child = up
        return False

    # -- where non-finite values end up --------------------------------------
    def cleaned_downstream(self, node: cst.BaseExpression) -> bool:
        """Every path of ``node``'s value reaches a ``nan_to_num`` (or a
        ``where(isfinite(...), ...)``) before it leaves the function. Followed through
        arithmetic, indexing, value-keeping methods and local names; any other
        use (a return, a store, an unknown call) is an escape. Only the
        forward value is cleaned: the gradient of ``log(0)`` is still inf, so
        callers also ask :meth:`grad_flows`."""
        return self._flows_to_cleaning(node, {}, 0, False)

    def only_ordered(self, node: cst.BaseExpression) -> bool:
        """The ``-inf`` that ``node`` may produce (a log of 0) only reaches
        comparisons, orderings (``sort``/``topk``/``max`` values, followed on) and
        indices (``argsort``, ``argmax``) before it leaves the function, through
        additions, negation and scaling by a Python number: a confidence score
        that sorts last, a beam whose impossible tokens are never picked. No
        gradient reaches the log through a comparison or an index."""
        return self._flows_to_cleaning(node, {}, 0, True)

    def no_gradient_escapes(self, node: cst.BaseExpression) -> bool:
        """Every use of ``node`` ends, through any arithmetic, ``where`` and
        value selections, in a comparison or an index (``argmax``,
        ``argsort``, ``topk(...).indices``) before it leaves the function:
        Otsu's between-class variance, read only by ``argmax`` and ``> 0``.
        No gradient flows back through a comparison or an index."""
        return self._flows_to_cleaning(node, {}, 0, _GRAD)

    def overflow_saturates(self, node: cst.BaseExpression) -> str:
        """Where an overflow of ``node`` (+-inf, never NaN) goes: ``"all"`` when
        every use ends in a function that saturates it (``sigmoid(delta +
        log(x1 / x2))``: sigmoid(inf) = 1, what float32 gives, with a zero
        derivative), through additions, negation, scaling by a Python number,
        ``log``/``exp``, value-keeping methods, local names, augmented
        assignments (``t[..., :2] += v`` then ``t.sigmoid()``) and -- for a
        helper's result -- every call of the helper in this file; ``"some"``
        when at least one call of the helper does (its other calls pass the
        result on where the file does not show); ``""`` otherwise."""
        if self._flows_to_cleaning(node, {}, 0, _SATURATE):
            return "all"
        if self._flows_to_cleaning(node, {}, 0, _SATURATE_SOME):
            return "some"
        return ""

    def _flows_to_cleaning(self, node: cst.CSTNode, seen: Dict[cst.CSTNode, bool], depth: int, order) -> bool:
        if depth > 24:
            return False
        if node not in seen:
            # a cycle is an escape -- except when following orderings: a running
            # minimum fed back into itself (`best = torch.min(loss, best)` in a
            # loop) adds no use the other reads do not already decide
            seen[node] = order is True
            seen[node] = self._cleaning_step(node, seen, depth, order)
        return seen[node]

    def _cleaning_step(self, node: cst.CSTNode, seen: Dict[cst.CSTNode, bool], depth: int, order) -> bool:
        # order: False (to a cleaning), True (to an ordering), _GRAD (to an ordering, through any arithmetic)
        parent = self.scopes.parent
        up = parent.get(node)
        if order:
            if isinstance(up, (cst.Comparison, cst.ComparisonTarget)):
                return True
            if isinstance(up, cst.BinaryOperation):
                other = up.right if up.left is node else up.left
                saturating = order in _SATURATING_MODES
                if order == _GRAD or isinstance(up.operator, (cst.Add, cst.Subtract)) or (
                    isinstance(up.operator, (cst.Multiply, cst.Divide))
                    # a Python number, or an integer tensor (lengths, counts of a beam; inf * 0 is NaN)
                    and ((number(other) not in (None, 0)) or not saturating and self.dtype(other) in (HOST, INTEGER))
                    # c / inf is 0: no longer an overflow, and not followed
                    and not (saturating and isinstance(up.operator, cst.Divide) and up.right is node)
                ):
                    return self._flows_to_cleaning(up, seen, depth + 1, order)
                return False
            if isinstance(up, cst.Attribute) and up.value is node and not isinstance(parent.get(up), cst.Call):
                if up.attr.value == "indices":
                    return True
                if up.attr.value == "values":
                    return self._flows_to_cleaning(up, seen, depth + 1, order)
        if isinstance(up, (cst.BinaryOperation, cst.UnaryOperation)):
            return self._flows_to_cleaning(up, seen, depth + 1, order)
        if order and isinstance(up, cst.Return):
            # a helper's result (Gumbel noise): follow it to every call of the helper in this file
            calls = self.calls_of(self.scopes.enclosing_function(up))
            if order == _SATURATE_SOME:
                return any(self._flows_to_cleaning(c, seen, depth + 1, order) for c in calls)
            return bool(calls) and all(self._flows_to_cleaning(c, seen, depth + 1, order) for c in calls)
        if order in _SATURATING_MODES and isinstance(up, cst.AugAssign) and up.value is node:
            return self._augmented_saturates(up, seen, depth, order)
        if isinstance(up, cst.Subscript) and up.value is node:
            if isinstance(parent.get(up), cst.AssignTarget):
                return True  # `x[m] = v` writes into x: its values go nowhere
            return self._flows_to_cleaning(up, seen, depth + 1, order)
        if isinstance(up, cst.Element) and isinstance(parent.get(up), cst.Tuple):
            # `a, b = f(x), g(y)`: follow the name it is unpacked into
            tup = parent.get(up)
            stmt = parent.get(tup)
            if not (isinstance(stmt, cst.Assign) and stmt.value is tup and len(stmt.targets) == 1
                    and isinstance(stmt.targets[0].target, cst.Tuple)
                    and len(stmt.targets[0].target.elements) == len(tup.elements)):
                return False
            target = stmt.targets[0].target.elements[tup.elements.index(up)].value
            if not isinstance(target, cst.Name):
                return False
            reads = self.scopes.reads_of_statement(stmt, target.value)
            return all(self._flows_to_cleaning(r, seen, depth + 1, order) for r in reads)
        if isinstance(up, cst.Attribute) and up.value is node:
            call = parent.get(up)
            if not (isinstance(call, cst.Call) and call.func is up):
                return up.attr.value in METADATA  # `x.dtype`, `x.shape` carry no value
            name = up.attr.value
            if name in METADATA or name in _LIKE_FACTORIES:
                return True
            # cleaned (in order mode an escape: the gradient of the -inf still flows)
            if name in _CLEANS:
                return not order
            if name in ("masked_fill", "masked_fill_") and call.args and _tests_finite(self.ctx, call.args[0].value):
                return not order
            if order and name in _ORDER_INDEX:
                return True
            if order in _SATURATING_MODES:
                if name in _SATURATES:
                    return True
                return name in _KEEPS_OVERFLOW and self._flows_to_cleaning(call, seen, depth + 1, order)
            if name in _CARRIES_NONFINITE or (order and name in _ORDER_VALUES) or (order == _GRAD and name in _ELEMENTWISE_GRAD):
                return self._flows_to_cleaning(call, seen, depth + 1, order)
            return False
        if isinstance(up, cst.Arg):
            call = parent.get(up)
            if not isinstance(call, cst.Call):
                return False
            op = torch_op(self.ctx, call)
            if op in _LIKE_FACTORIES:
                return True  # only its shape is read (`zeros_like(x)`)
            if op in _CLEANS:
                return not order
            if op == "where" and len(call.args) == 3 and up is not call.args[0] and _tests_finite(self.ctx, call.args[0].value):
                return not order
            if order and op in _ORDER_INDEX and up is call.args[0]:
                return True
            if order in _SATURATING_MODES:
                if up is not call.args[0]:
                    return False
                if op in _SATURATES:
                    return True
                return op in _KEEPS_OVERFLOW and self._flows_to_cleaning(call, seen, depth + 1, order)
            if (op in _CARRIES_NONFINITE or (order and op in _ORDER_VALUES)) and (
                    up is call.args[0] or order and op in ("min", "max") and len(call.args) == 2
                    and not is_method_call(self.ctx, call) and all(a.keyword is None for a in call.args)):
                # `torch.min(loss, best)`: the elementwise minimum of two tensors, either one
                return self._flows_to_cleaning(call, seen, depth + 1, order)
            if order == _GRAD and (op in _CARRIES_NONFINITE or op in _ELEMENTWISE_GRAD) and (
                    op != "where" or up is not call.args[0]):
                return self._flows_to_cleaning(call, seen, depth + 1, order)  # any operand carries a gradient
            return False
        if isinstance(up, cst.Assign) and len(up.targets) == 1 and isinstance(up.targets[0].target, cst.Tuple):
            # `values, index = x.topk(k)`: the values carry on, the indices are harmless
            first = up.targets[0].target.elements[0].value if up.targets[0].target.elements else None
            if not (order and isinstance(first, cst.Name) and isinstance(node, cst.Call)
                    and torch_op(self.ctx, node) in _ORDER_VALUES):
                return False
            reads = self.scopes.reads_of_statement(up, first.value)
            return all(self._flows_to_cleaning(r, seen, depth + 1, order) for r in reads)
        if isinstance(up, cst.Assign) and len(up.targets) == 1 and isinstance(up.targets[0].target, cst.Name):
            name = up.targets[0].target.value
            reads = self.scopes.reads_of_statement(up, name) + self._loop_back_reads(up, name)
            for r in reads:
                if self._finiteness_test(r):
                    continue  # `isfinite(x)` reads it without passing it on
                if self._cleans_in_place(r, up):
                    return not order  # `x.nan_to_num_()`: later reads see the cleaned tensor
                if not self._flows_to_cleaning(r, seen, depth + 1, order):
                    return False
            return bool(reads)
        return False

    def _loop_back_reads(self, stmt: cst.CSTNode, name: str) -> List[cst.Name]:
        """The reads of ``name`` that a binding made in a loop's body reaches on
        the next iteration: those earlier in the body of the innermost loop
        around ``stmt`` (``best = torch.min(loss, best)`` feeds ``loss < best``)."""
        loop = next((a for a in self.scopes.ancestors(stmt)
                     if isinstance(a, (cst.For, cst.While, cst.FunctionDef, cst.Lambda, cst.ClassDef))), None)
        if not isinstance(loop, (cst.For, cst.While)):
            return []
        scope = self.scopes.scope_of.get(stmt)
        # up to the first binding of the name in the loop: later reads see that one
        inside = [b for b in self.scopes.bindings.get(scope, {}).get(name, [])
                  if b.node is not None and loop in self.scopes.ancestors(b.node)]
        if not inside:
            return []
        first = min(inside, key=lambda b: b.order)
        out = []
        for n in self.scopes.reads.get(scope, {}).get(name, []):
            ups = list(self.scopes.ancestors(n))
            # before it, or in its own value (`best = torch.min(loss, best)` reads the last one)
            if loop in ups and (self.scopes.order[n] < first.order or first.node in ups):
                out.append(n)
        return out

    def _augmented_saturates(self, aug: cst.AugAssign, seen: Dict[cst.CSTNode, bool], depth: int, order) -> bool:
        """``t += v`` / ``t[..., :2] += v`` (``v`` overflowing): the overflow is
        now in ``t``; follow the reads of ``t`` after the statement."""
        if not isinstance(aug.operator, (cst.AddAssign, cst.SubtractAssign)):
            return False
        target = aug.target
        if isinstance(target, cst.Name):
            reads = self.scopes.reads_of_statement(aug, target.value)
            return bool(reads) and all(self._flows_to_cleaning(r, seen, depth + 1, order) for r in reads)
        while isinstance(target, cst.Subscript):
            target = target.value
        if not isinstance(target, cst.Name):
            return False
        bindings = self.scopes.reaching(target)[:1]
        if not bindings or bindings[0].kind not in ("assign", "param", "augassign"):
            return False
        where = self.scopes.order.get(target, 0)
        reads = [r for r in self.scopes.reads_of(bindings[0]) if self.scopes.order.get(r, 0) > where
                 and aug not in set(self.scopes.ancestors(r))]
        return bool(reads) and all(self._flows_to_cleaning(r, seen, depth + 1, order) for r in reads)

    def calls_named(self, name: str) -> List[cst.Call]:
        """Every call in this file of a plain name or ``self.<name>``."""
        if self._call_index is None:
            self._build_call_index()
        return list(self._call_index.get(name, []))  # type: ignore[union-attr]

    def _build_call_index(self) -> None:
        self._call_index = {}
        for n in self.scopes.order:  # every node, in source order: no second traversal
            if isinstance(n, cst.Call):
                f = n.func
                name = f.value if isinstance(f, cst.Name) else (
                    f.attr.value if isinstance(f, cst.Attribute) and _is_self(f.value) else None)
                if name is not None:
                    self._call_index.setdefault(name, []).append(n)

    def calls_of(self, func: Optional[cst.FunctionDef]) -> List[cst.Call]:
        """The calls of a module-level function (``f(x)``) or of a method
        (``self.f(x)``) in this file; empty when it may be called from elsewhere
        in a way the file does not show (a public method of another name)."""
        if func is None:
            return []
        if self._call_index is None:
            self._build_call_index()
        cls = self.scopes.enclosing_class(func)
        out = []
        for call in self._call_index.get(func.name.value, []):
            if isinstance(call.func, cst.Name):
                if cls is None and any(b.node is func for b in self.scopes.reaching(call.func)[:1]):
                    out.append(call)
            elif cls is not None and self.scopes.enclosing_class(call) is cls:
                out.append(call)
        return out

    def all_calls(self, func: cst.FunctionDef) -> Optional[List[Tuple["Facts", cst.Call]]]:
        """Every call in the project of a public module-level function, each
        with the analysis of the file it is in: this file's calls, and those
        of the other modules that import it (test code left out: tests choose
        their own inputs). None when they cannot all be seen: the function is
        used other than by calling it (a callback, a registry), is decorated
        by a registering decorator, has more than
        ``_CALLER_FILES`` caller files, or this file is not part of a
        project or is test code (whose callers, tests, are left out); or
        when this analysis is itself a caller's (one level of callers is
        followed)."""
        if func in self._all_calls:
            return self._all_calls[func]
        self._all_calls[func] = None
        name = func.name.value
        if name.startswith("__") or any("regist" in self.ctx.code(d.decorator) for d in func.decorators):
            return None
        seen = self._seen_callers(func)
        if seen is None or len(seen[1]) > _CALLER_FILES:
            return None
        here, found = seen
        out: List[Tuple[Facts, cst.Call]] = [(self, c) for c in here]
        for other, local, via_module, _ in found:
            facts = _remote_facts(other, self.ctx.dtypes, self.ctx.project.roots[-1])
            if facts is None:
                return None
            calls = facts.calls_through_import(local, name if via_module else None, star=local.startswith(STAR))
            if calls is None:
                return None
            out.extend((facts, c) for c in calls)
        self._all_calls[func] = out
        return out

    def _seen_callers(self, func: cst.FunctionDef) -> Optional[Tuple[List[cst.Call], List[Tuple[str, str, bool, bool]]]]:
        """(this file's calls of a module-level function, the other files of
        the project that may call it, test code left out: tests choose their
        own inputs); None when they cannot be listed: this file is not part of
        a project or is test code, the function is not module-level or its
        name is used otherwise here, or this analysis is itself a caller's
        (one level of callers is followed)."""
        project = self.ctx.project
        if (self.remote or project is None or self.ctx.test_code
                or self.scopes.parent.get(func) is not self.ctx.module):
            return None
        here = self._only_called(func)
        found = project.callers(func.name.value) if here is not None else None
        if here is None or found is None:
            return None
        return here, [c for c in found if not c[3]]

    def only_tests_call(self, func: cst.FunctionDef, depth: int = 0) -> bool:
        """A module-level function that only test code runs: test modules
        import it, no other module does, and each call of it in this file is
        inside a function that only tests run (``mamba_inner_ref`` calling
        ``selective_scan_ref``): a reference implementation that checks a
        kernel, or a test helper. Its inputs are the tests' own."""
        project = self.ctx.project
        if (depth > 2 or self.remote or project is None or self.ctx.test_code
                or self.scopes.parent.get(func) is not self.ctx.module):
            return False
        here = self._only_called(func)
        if here is None:
            return False
        found = project.callers(func.name.value)
        if found is None or any(not test for *_, test in found):
            return False
        for call in here:
            outer = self.scopes.enclosing_function(call)
            while outer is not None and self.scopes.parent.get(outer) is not self.ctx.module:
                outer = self.scopes.enclosing_function(outer)
            if outer is None or outer is func or not self.only_tests_call(outer, depth + 1):
                return False
        return bool(found) or bool(here)

    def _imported_elsewhere(self, func: cst.FunctionDef) -> bool:
        """A module-level function with a private name (``_safe_divide``) that
        other modules of the project import all the same: its calls in this
        file are not all its calls. (When the importers cannot be listed, the
        convention that a private name stays in its module is kept.)"""
        project = self.ctx.project
        if project is None or self.remote or self.scopes.parent.get(func) is not self.ctx.module:
            return False
        found = project.callers(func.name.value)
        return found is not None and any(not test for *_, test in found)

    def _class_mentions(self, method: cst.FunctionDef) -> int:
        """How often a method's name appears in the code of its class (its
        definition included; strings and comments too, which errs towards
        'used otherwise')."""
        cls = self.scopes.enclosing_class(method)
        key = (cls, method.name.value)
        if key not in self._mentions:
            self._mentions[key] = len(re.findall(rf"(?<!\w){re.escape(method.name.value)}\b",
                                                 self.ctx.code(cls) if cls is not None else self.ctx.source))
        return self._mentions[key]

    def _app_method_calls(self, func: cst.FunctionDef) -> Optional[List[cst.Call]]:
        """The calls of a public method of an application (no installable
        library: nobody outside calls it), when its class calls it as
        ``self.f(...)``, the file names it nowhere else, and no other file of
        the project names it (:meth:`ProjectFile.named_elsewhere`). None
        otherwise: a method its class never calls may be a hook a framework
        calls by name with arguments of its own."""
        project = self.ctx.project
        if project is None or self.remote or self.ctx.test_code:
            return None
        here = self.calls_of(func)
        name = func.name.value
        if not here or len(re.findall(rf"(?<![\w]){re.escape(name)}\b", self.ctx.source)) != 1 + len(here):
            return None
        return None if project.named_elsewhere(name) else here

    def untaken_branch(self, node: cst.CSTNode) -> Optional[str]:
        """Why ``node`` never runs, when it lies in a branch of an ``if`` on a
        parameter (or after an ``if ...: return`` guard) that no call takes:
        every call of the function (:meth:`arguments_for`, defaults included,
        followed through a caller's own parameters) passes values for which
        the test decides the other way -- ``if dist_far is None:`` when every
        call passes a tensor, ``if k > 0:`` when every call passes ``k=0``.
        None when the branch may run or a call is not seen."""
        if self.ctx.project is None:
            return None
        child = node
        for up in self.scopes.ancestors(node):
            if type(up) in (cst.FunctionDef, cst.ClassDef, cst.Module, cst.Lambda):
                return None
            if type(up) is cst.If and child is not up.test:
                why = self._decided(up.test, child is not up.body)
                if why is not None:
                    return why
            elif type(up) is cst.IndentedBlock and child in up.body:
                for stmt in up.body[:up.body.index(child)]:
                    if type(stmt) is cst.If and stmt.orelse is None and _leaves(stmt.body):
                        why = self._decided(stmt.test, True)
                        if why is not None:
                            return why
            child = up
        return None

    def torch_fallback(self, node: cst.CSTNode) -> Optional[str]:
        """The torch feature whose absence ``node``'s branch stands in for, or
        None: ``node`` lies in the ``else`` of ``if 'sinc' in dir(torch):`` or
        ``if hasattr(torch, "sinc"):`` (or under ``if not hasattr(...)``), at
        any level -- a hand-written ``sinc`` for a torch that lacks it, as in
        the alias-free resampling code that vocoders copy. Current torch has
        what such code tests for, so the branch does not run."""
        child = node
        for up in self.scopes.ancestors(node):
            if type(up) is cst.If and child is not up.test:
                negated = isinstance(up.test, cst.UnaryOperation) and isinstance(up.test.operator, cst.Not)
                feature = self._torch_feature(up.test.expression if negated else up.test)  # type: ignore[attr-defined]
                if feature is not None and (child is up.body) == negated:
                    return feature
            child = up
        return None

    def _torch_feature(self, test: cst.BaseExpression) -> Optional[str]:
        """``X`` for ``'X' in dir(torch...)`` or ``hasattr(torch..., 'X')``."""
        owner = name = None
        if isinstance(test, cst.Comparison) and len(test.comparisons) == 1 \
                and isinstance(test.comparisons[0].operator, cst.In):
            listing = test.comparisons[0].comparator
            if isinstance(listing, cst.Call) and isinstance(listing.func, cst.Name) and listing.func.value == "dir" \
                    and len(listing.args) == 1:
                owner, name = listing.args[0].value, test.left
        elif isinstance(test, cst.Call) and isinstance(test.func, cst.Name) and test.func.value == "hasattr" \
                and len(test.args) == 2:
            owner, name = test.args[0].value, test.args[1].value
        if owner is None or not isinstance(name, cst.SimpleString) or not isinstance(name.evaluated_value, str):
            return None
        resolved = self.ctx.resolve(owner) or ""
        return name.evaluated_value if resolved == "torch" or resolved.startswith("torch.") else None

    def _decided(self, test: cst.BaseExpression, value: bool) -> Optional[str]:
        """A description of the calls when ``test`` is ``value`` in every one
        of them (see :meth:`untaken_branch`), else None."""
        seen: List[str] = []
        if _always(test, lambda name: self._parameter_values(name, seen)) is not value:
            return None
        return "; ".join(seen) or None

    def _parameter_values(self, name: cst.Name, seen: List[str], depth: int = 0) -> Optional[list]:
        """The values every call passes for the parameter ``name`` reads (a
        Python constant, or ``_SOME`` for a value that is surely not None),
        noted in ``seen``; None when one is not known."""
        reaching = self.scopes.reaching(name)
        if len(reaching) != 1 or reaching[0].kind != "param" or depth > 3:
            return None
        binding = reaching[0]
        func = self.scopes.parent.get(self.scopes.parent.get(binding.node))
        if (type(func) is not cst.FunctionDef or self.ctx.project is None or not func.name.value.startswith("_")
                and self.scopes.enclosing_function(func) is None and self.ctx.project.library()):
            return None  # a library's public function: its users pass what they like
        given = self.arguments_for(binding, defaults=True)
        if not given:
            return None
        out = []
        for facts, expr in given:
            value = facts._known_value(expr, seen, depth)
            if value is None:
                return None
            out.extend(value)
        shown = sorted({"a value other than None" if v is _SOME else repr(v) for v in out})
        seen.append(f"every call of `{func.name.value}` passes {' or '.join(shown)} for `{name.value}`")
        return out

    def _known_value(self, expr: cst.BaseExpression, seen: List[str], depth: int) -> Optional[list]:
        """What ``expr`` can be (see :meth:`_parameter_values`), or None."""
        kind = type(expr)
        constant = _constant(expr)
        reaching = self.scopes.reaching(expr) if kind is cst.Name else []
        if constant is not _NOTHING and not reaching:
            return [constant]
        if kind is cst.Name:
            if len(reaching) == 1 and reaching[0].kind == "param":
                return self._parameter_values(expr, seen, depth + 1)
            return None
        if kind in _NEVER_NONE:
            return [_SOME]
        if kind is cst.Subscript and any(
                type(e.slice) is cst.Index and (type(e.slice.value) is cst.Ellipsis or (
                    type(e.slice.value) is cst.Name and e.slice.value.value == "None"))
                or type(e.slice) is cst.Slice for e in expr.slice):
            return [_SOME]  # ``far[..., None]``, ``x[:, 1:]``: a tensor or a sequence, never None
        if kind is cst.Call:
            qualified, _ = self.ctx.callee(expr)
            if qualified is not None and qualified.split(".")[0] == "torch":
                return [_SOME]
        return None

    def _only_called(self, func: cst.FunctionDef) -> Optional[List[cst.Call]]:
        """This file's calls of a function (module-level, or nested in
        another); None when its name is also used otherwise here (passed as
        a value, put in a table, returned) or a use of the name cannot be
        resolved. Names in strings and comments (a docstring that mentions
        it) are not uses."""
        if func in self._only_calls:
            return self._only_calls[func]
        name = func.name.value
        calls: Optional[List[cst.Call]] = []
        for table in self.scopes.bindings.values():
            same = table.get(name, ())
            if any(b.node is func for b in same) and len(same) > 1:
                calls = None  # rebound (``f = jit(f)``): which calls reach the function is unclear
        for reads in self.scopes.reads.values() if calls is not None else ():
            for read in reads.get(name, ()):
                reaching = self.scopes.reaching(read)[:1]
                if reaching and reaching[0].node is not func:
                    continue  # another binding of the name
                up = self.scopes.parent.get(read)
                if not reaching or type(up) is not cst.Call or up.func is not read:
                    calls = None
                    break
                calls.append(up)  # type: ignore[union-attr]
            if calls is None:
                break
        self._only_calls[func] = calls
        return calls

    def calls_through_import(self, local: str, attr: Optional[str], star: bool = False) -> Optional[List[cst.Call]]:
        """The calls in this file of an imported function: ``local(...)``, or
        ``local.attr(...)`` when ``local`` is its module; ``star``: the name
        (``*name``) comes from a star import, which does not spell it. None
        when the name is also used otherwise (passed as a value, rebound)."""
        if star:
            local = local[len(STAR):]
        spelled = f"{local}.{attr}" if attr else local
        uses = len(re.findall(rf"(?<![\w.]){re.escape(spelled)}\b", self.ctx.source))
        calls = []
        for n in self.scopes.order:
            if type(n) is cst.Call:
                f = n.func
                if attr is None and type(f) is cst.Name and f.value == local:
                    calls.append(n)
                elif attr is not None and type(f) is cst.Attribute and f.attr.value == attr \
                        and type(f.value) is cst.Name and f.value.value == local:
                    calls.append(n)
        # the import itself spells the name once (``from m import f``); a
        # module alias is spelled ``local.attr`` only where it is used
        return calls if uses == len(calls) + (0 if attr or star else 1) else None

    def _finiteness_test(self, read: cst.Name) -> bool:
        """``isfinite(x)`` / ``x.isnan()``: a read that tests, not passes on, the value."""
        up = self.scopes.parent.get(read)
        if isinstance(up, cst.Arg):
            call = self.scopes.parent.get(up)
            return isinstance(call, cst.Call) and _tests_finite(self.ctx, call)
        return isinstance(up, cst.Attribute) and up.attr.value in _FINITE_TESTS

    def _cleans_in_place(self, read: cst.Name, assign: cst.Assign) -> bool:
        """``x.nan_to_num_()`` (or ``x.masked_fill_(~isfinite(x), v)``) as a
        statement of the same block as the assignment."""
        attr = self.scopes.parent.get(read)
        call = self.scopes.parent.get(attr)
        if not (isinstance(attr, cst.Attribute) and isinstance(call, cst.Call) and call.func is attr):
            return False
        name = attr.attr.value
        if not (name == "nan_to_num_" or (name == "masked_fill_" and call.args and _tests_finite(self.ctx, call.args[0].value))):
            return False
        expr = self.scopes.parent.get(call)
        stmt = self.scopes.parent.get(expr) if isinstance(expr, cst.Expr) else None
        return stmt is not None and self.scopes.parent.get(stmt) is self.scopes.parent.get(
            self.scopes.parent.get(assign))


#: at most this many other files calling one function are analysed
_CALLER_FILES = 6
#: the analyses of callers in other modules, newest last (a few are kept: a
#: parsed module is large)
_REMOTE: Dict[str, Optional["Facts"]] = {}
_REMOTE_KEPT = 8


def _remote_facts(path: str, dtypes, root: Optional[str] = None) -> Optional["Facts"]:
    """The analysis of another module of the project, to read its calls of
    a function of the checked file; None when it cannot be parsed."""
    if path in _REMOTE:
        facts = _REMOTE.pop(path)
        _REMOTE[path] = facts
        return facts
    from ..engine import parse
    from ..rule import Context
    from ..resolve import Names
    from .project import ProjectFile, _read_text

    source = _read_text(path)
    facts = None
    try:
        module = parse(source)
    except Exception:  # libcst raises several kinds on bad input
        module = None
    if module is not None:
        names = Names()
        names.scan(module.body)
        project = ProjectFile(path, source, root)
        project.bind_star_names(names)
        ctx = Context(path, source, module, names, dtypes, project)
        facts = Facts(ctx)
        facts.remote = True
        ctx._facts = facts
    _REMOTE[path] = facts
    while len(_REMOTE) > _REMOTE_KEPT:
        del _REMOTE[next(iter(_REMOTE))]
    return facts


def _through_local(facts: "Facts", node: cst.BaseExpression) -> cst.BaseExpression:
    """A local name's assigned value (one hop), else the node."""
    value = facts.scopes.assigned_value(node) if isinstance(node, cst.Name) else None
    return value if value is not None else node


#: tensor methods whose ``mask`` (first) argument must be a bool tensor
_MASK_METHODS = frozenset({"masked_fill", "masked_fill_", "masked_select", "masked_scatter", "masked_scatter_"})
#: a value that is surely not None, whatever else it is
_SOME = object()
#: expressions whose value is never None
_NEVER_NONE = frozenset({
    cst.List, cst.Tuple, cst.Dict, cst.Set, cst.ListComp, cst.SetComp, cst.DictComp, cst.GeneratorExp,
    cst.BinaryOperation, cst.Lambda, cst.FormattedString, cst.ConcatenatedString,
})
_COMPARE = {
    cst.Is: lambda a, b: a is b, cst.IsNot: lambda a, b: a is not b,
    cst.Equal: lambda a, b: a == b, cst.NotEqual: lambda a, b: a != b,
    cst.LessThan: lambda a, b: a < b, cst.LessThanEqual: lambda a, b: a <= b,
    cst.GreaterThan: lambda a, b: a > b, cst.GreaterThanEqual: lambda a, b: a >= b,
}


def _always(test: cst.BaseExpression, values) -> Optional[bool]:
    """The value ``test`` has in every call, when the same in all: a
    parameter (``values(name)``: what the calls pass, or None) compared with
    a constant, its truth, ``not``, ``and``/``or`` of those; None otherwise."""
    kind = type(test)
    if kind is cst.UnaryOperation and type(test.operator) is cst.Not:
        inner = _always(test.expression, values)
        return None if inner is None else not inner
    if kind is cst.BooleanOperation:
        left, right = _always(test.left, values), _always(test.right, values)
        if type(test.operator) is cst.And:
            return False if False in (left, right) else True if left is right is True else None
        return True if True in (left, right) else False if left is right is False else None
    if kind is cst.Name:
        given = values(test)
        if not given or any(v is _SOME for v in given):
            return None
        truths = {bool(v) for v in given}
        return truths.pop() if len(truths) == 1 else None
    if kind is not cst.Comparison or len(test.comparisons) != 1:
        return None
    compare = test.comparisons[0]
    op = _COMPARE.get(type(compare.operator))
    sides = [test.left, compare.comparator]
    const = [_constant(side) for side in sides]
    if op is None or [type(side) is cst.Name and c is _NOTHING for side, c in zip(sides, const)].count(True) != 1:
        return None
    named = 0 if const[0] is _NOTHING else 1
    other = const[1 - named]
    if other is _NOTHING:
        return None
    given = values(sides[named])
    if not given:
        return None
    outcomes = set()
    for v in given:
        if v is _SOME:
            if other is not None or type(compare.operator) not in (cst.Is, cst.IsNot):
                return None
            outcomes.add(type(compare.operator) is cst.IsNot)
            continue
        try:
            outcomes.add(bool(op(v, other) if named == 0 else op(other, v)))
        except TypeError:
            return None
    return outcomes.pop() if len(outcomes) == 1 else None


_NOTHING = object()


def _constant(node: cst.BaseExpression):
    """The Python constant a literal spells (``None``, ``0``, ``-1.0``, ``"x"``), else ``_NOTHING``."""
    kind = type(node)
    if kind is cst.Name:
        return {"None": None, "True": True, "False": False}.get(node.value, _NOTHING)
    if kind in (cst.Integer, cst.Float, cst.SimpleString) or (
            kind is cst.UnaryOperation and type(node.operator) is cst.Minus
            and type(node.expression) in (cst.Integer, cst.Float)):
        try:
            return ast.literal_eval(cst.Module([]).code_for_node(node))
        except (ValueError, SyntaxError):
            return _NOTHING
    return _NOTHING


def _leaves(block: cst.BaseSuite) -> bool:
    """The block ends by leaving the function (``return``, ``raise``)."""
    body = getattr(block, "body", ())
    last = body[-1] if body else None
    if type(last) is cst.SimpleStatementLine:
        last = last.body[-1] if last.body else None
    elif type(block) is cst.SimpleStatementSuite:
        last = block.body[-1] if block.body else None
    return type(last) in (cst.Return, cst.Raise)


def _tests_empty(test: cst.BaseExpression) -> bool:
    def numel(n):
        return (isinstance(n, cst.Call) and isinstance(n.func, cst.Attribute)
                and n.func.attr.value == "numel" and not n.args)
    if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
        return numel(test.expression)
    if isinstance(test, cst.Comparison) and len(test.comparisons) == 1:
        c = test.comparisons[0]
        return (isinstance(c.operator, cst.Equal) and numel(test.left) and number(c.comparator) == 0)
    return False


_FINITE_TESTS = frozenset({"isfinite", "isnan", "isinf", "isposinf", "isneginf"})


def _tests_finite(ctx, cond: cst.BaseExpression) -> bool:
    """``isfinite(x)``, ``~isnan(x)``, ``x.isinf()`` and the like in a condition."""
    for sub, _ in iter_tree(cond):
        if isinstance(sub, cst.Call):
            name = torch_op(ctx, sub) or (sub.func.attr.value if isinstance(sub.func, cst.Attribute) else "")
            if name in _FINITE_TESTS:
                return True
    return False


#: orderings whose result carries the values (``sort(x).values``, ``topk``) or only indices
_ORDER_VALUES = frozenset({"sort", "topk", "max", "min", "kthvalue", "msort", "amax", "amin", "gather"})
_ORDER_INDEX = frozenset({"argsort", "argmax", "argmin"})
#: the mode of the flow walker that follows a gradient through any arithmetic
_GRAD = "grad"
#: differentiable elementwise ops whose every tensor operand reaches the result
_ELEMENTWISE_GRAD = frozenset({
    "where", "maximum", "minimum", "mul", "add", "sub", "div", "pow", "clamp", "clip", "square",
    # elementwise functions: the gradient goes wherever the value goes
    "rad2deg", "deg2rad", "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "tanh", "sigmoid", "relu",
    "reciprocal", "rsqrt", "log1p", "expm1", "clamp_min", "clamp_max",
})
#: modes of the flow walker that follow an overflow (+-inf) to a function that saturates it:
#: every call of a helper must saturate it, or at least one
_SATURATE = "saturate"
_SATURATE_SOME = "saturate-some"
_SATURATING_MODES = (_SATURATE, _SATURATE_SOME)
#: functions that map +-inf to a finite value with a zero derivative there (sigmoid(inf) = 1)
_SATURATES = frozenset({"sigmoid", "sigmoid_", "expit", "tanh", "tanh_", "hardtanh", "hardsigmoid", "erf"})
#: calls that keep an overflow an overflow of the same sign, never NaN, in the saturating modes
_KEEPS_OVERFLOW = _KEEPS_VALUES | frozenset({
    "log", "log_", "log1p", "log2", "log10", "exp", "exp_", "expm1", "sqrt", "float", "double", "sum", "mean",
    "amax", "amin", "cat", "stack", "unbind", "split", "chunk", "repeat", "index_select", "gather",
})
#: calls that replace inf/NaN
_CLEANS = frozenset({"nan_to_num", "nan_to_num_"})
#: calls whose result carries an inf/NaN of their first argument or receiver
_CARRIES_NONFINITE = _KEEPS_VALUES | frozenset({
    "cpu", "cuda", "float", "double", "split", "chunk", "unbind", "neg", "abs", "mul", "add", "sub", "div",
    "sum", "mean", "cat", "stack", "sqrt", "pow", "log", "exp", "gather", "index_select", "repeat", "masked_fill",
})


class _Lookup:
    """Adapter for ``patterns.value_facts``: a name's value at its use."""

    def __init__(self, facts: Facts, site: cst.CSTNode) -> None:
        self.facts = facts
        self.site = site

    def lookup(self, name: str) -> Optional[cst.BaseExpression]:
        return None

    def lookup_node(self, node: cst.Name) -> Optional[cst.BaseExpression]:
        scopes = self.facts.scopes
        for b in scopes.reaching(node)[:1]:
            updated = _updated_in_place(scopes, b, node)
            if updated is not None:
                return updated
            if b.kind in ("assign", "walrus"):
                return b.value if b.value is not None else _sorted_values(self.facts, b)
        return None

    def self_values(self, node: cst.Attribute) -> Optional[List[cst.BaseExpression]]:
        """The values of every ``self.<attr> = value`` in the class around a
        ``self.<attr>`` read (at most four); None when there are none, one
        is not a plain value (an unpacking), or the file updates it in place
        (``self.<attr> *= -1``)."""
        found = self.facts.scopes.self_attribute(node)
        if not found or len(found) > 4 or any(v is None for _, v in found):
            return None
        if re.search(rf"self\.{re.escape(node.attr.value)}\s*(?:[-+*/%@&|^]|\*\*|//|<<|>>)=", self.facts.ctx.source):
            return None
        return [v for _, v in found]  # type: ignore[misc]

    def call_facts(self, call: cst.Call) -> FrozenSet[str]:
        """The range of a call the analysis knows beyond torch ops: a helper
        of this file or the project whose summary says it returns (log-)
        probabilities, or a layer attribute ``self.f = nn.LogSoftmax(...)``."""
        kind = _layer_kind(self.facts, call)
        if kind is None:
            summary = self.facts.summary_of_call(call)
            kind = summary.returns if summary is not None else None
        if kind == LOG_PROBABILITY:
            return frozenset({NONPOS, UPPER})
        if kind == PROBABILITY:
            return frozenset({NONNEG, UPPER, LOWER})
        return frozenset()


#: in-place updates that bound a tensor: ``x.sub_(x.max(...))``, ``x.clamp_(max=v)``
_BOUNDING_IN_PLACE = frozenset({"sub_", "clamp_", "clamp_max_", "clip_"})


def _updated_in_place(scopes: Scopes, b: Binding, use: cst.Name) -> Optional[cst.BaseExpression]:
    """The value a name holds after the latest bounding in-place update between
    its binding and ``use`` (a statement of its own: ``logits.sub_(m)``):
    ``logits - m`` or the clamp call, else None."""
    where = scopes.order.get(use)
    if where is None:
        return None
    latest: Optional[cst.Call] = None
    for read in scopes.reads_of(b):
        order = scopes.order.get(read, 0)
        if order >= where:
            continue
        attr = scopes.parent.get(read)
        call = scopes.parent.get(attr) if type(attr) is cst.Attribute else None
        if (type(call) is cst.Call and attr.value is read and attr.attr.value in _BOUNDING_IN_PLACE
                and type(scopes.parent.get(call)) is cst.Expr
                and (latest is None or order > scopes.order.get(latest, 0))):
            latest = call
    if latest is None:
        return None
    method = latest.func.attr.value  # type: ignore[union-attr]
    if method == "sub_":
        if len(latest.args) != 1 or latest.args[0].keyword is not None:
            return None
        # a node outside the tree whose children are the tree's own nodes
        return cst.BinaryOperation(left=latest.func.value, operator=cst.Subtract(),  # type: ignore[union-attr]
                                   right=latest.args[0].value)
    return latest




def _sorted_values(facts: Facts, b: Binding) -> Optional[cst.BaseExpression]:
    """``values, idx = torch.sort(x)``: ``values`` holds elements of ``x``, so
    it has x's bounds."""
    stmt = b.node
    if not (isinstance(stmt, cst.Assign) and len(stmt.targets) == 1 and isinstance(stmt.value, cst.Call)):
        return None
    target = stmt.targets[0].target
    if not (isinstance(target, (cst.Tuple, cst.List)) and target.elements):
        return None
    first = target.elements[0].value
    if not (isinstance(first, cst.Name) and first.value == b.name):
        return None
    if torch_op(facts.ctx, stmt.value) not in VALUES_AND_INDICES:
        return None
    return subject(facts.ctx, stmt.value)


_LAYER_KINDS = {"LogSoftmax": LOG_PROBABILITY, "LogSigmoid": LOG_PROBABILITY,
                "Softmax": PROBABILITY, "Sigmoid": PROBABILITY, "Softmin": PROBABILITY}


def _layer_kind(facts: Facts, call: cst.Call) -> Optional[str]:
    """``self.f(x)`` where every ``self.f = ...`` builds ``nn.LogSoftmax`` (or
    another layer of known range)."""
    kinds = {_LAYER_KINDS.get(name) for name in _layer_classes(facts, call)}
    return kinds.pop() if len(kinds) == 1 else None


def _layer_classes(facts: Facts, call: cst.Call) -> Set[str]:
    """The ``torch.nn`` classes every ``self.f = ...`` builds, for a call
    ``self.f(x)`` (empty when one of them is not a ``torch.nn`` class)."""
    func = call.func
    if not (isinstance(func, cst.Attribute) and _is_self(func.value)):
        return set()
    names = set()
    for _, value in facts.scopes.self_attribute(func):
        qualified = facts.ctx.resolve(value.func) if isinstance(value, cst.Call) else None
        if not (qualified or "").startswith("torch.nn."):
            return set()
        names.add((qualified or "").rsplit(".", 1)[-1])
    return names


#: ops that CUDA/MPS autocast runs in float32 (NUMERICS: Autocast)
_AUTOCAST_FLOAT32 = frozenset({
    "softmax", "log_softmax", "softmin", "exp", "log", "sum", "cumsum", "norm", "normalize", "pow",
    "rsqrt", "layer_norm", "group_norm", "cosine_similarity", "logsumexp",
})


def _made_in_float32_by_autocast(facts: Facts, node: cst.BaseExpression) -> bool:
    """``node`` (through one local) is the result of an op that autocast runs
    in float32, so a sigmoid of it underflows only in a model cast to half."""
    node = look_through(facts.ctx, _through_local(facts, look_through(facts.ctx, node, _KEEPS_VALUES)), _KEEPS_VALUES)
    return isinstance(node, cst.Call) and torch_op(facts.ctx, node) in _AUTOCAST_FLOAT32


def _surest(a: str, b: str) -> str:
    for kind in (ORDINARY, HALF_ONLY):
        if kind in (a, b):
            return kind
    return EDGE


def _is_self(node: cst.BaseExpression) -> bool:
    return isinstance(node, cst.Name) and node.value == "self"


def _disables_autocast(ctx, node: cst.BaseExpression) -> bool:
    if not isinstance(node, cst.Call):
        return False
    name = ctx.resolve(node.func) or dotted_name(node.func) or ""
    if not name.endswith("autocast"):
        return False
    enabled = arg(node, None, "enabled")
    return enabled is not None and isinstance(enabled.value, cst.Name) and enabled.value.value == "False"


_DECOMPOSITION = re.compile(r"^(?:register_(?:decomposition|lowering)|\w*_reference|dependent_property)$")


def _registers_decomposition(decorator: cst.BaseExpression) -> bool:
    """``@register_decomposition(aten.x)``, ``@register_lowering(...)``,
    ``@_make_elementwise_unary_reference(...)``, ``@constraints.dependent_property``."""
    func = decorator.func if type(decorator) is cst.Call else decorator
    return bool(_DECOMPOSITION.match(last_name(func) or ""))


def _transposed_here(node: cst.BaseExpression) -> bool:
    """The operand is written as a transpose right there (``a.transpose(1, 2)``,
    ``a.T``), not a name that holds one (attention code keeps queries in
    ``q = x.view(...).transpose(1, 2)``, and those are scores' left sides)."""
    if isinstance(node, cst.Attribute):
        return node.attr.value in ("T", "mT", "H", "mH")
    return isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value in (
        "transpose", "t", "swapaxes", "swapdims")


#: calls made for their effect that keep no tensor
_LOGGING_CALLS = frozenset({"print", "warn", "debug", "info", "warning", "error", "log_once", "rank_zero_warn",
                            "rank_zero_info"})
#: calls and methods whose result is a Python value (or an integer/bool tensor)
_NUMBER_CALLS = frozenset({"float", "int", "bool", "str", "len", "round", "item", "tolist", "numel", "dim",
                           "isfinite", "isnan", "isinf", "all", "any", "argmax", "argmin", "format"})


def _python_number(node: Optional[cst.BaseExpression], assigned: Dict[str, List[cst.BaseExpression]],
                   depth: int) -> bool:
    """Whether ``node`` is a Python number, boolean or string, or a
    comparison (a boolean, never differentiable), built from such values
    only; a local name counts when every value assigned to it does."""
    if node is None or depth > 6:
        return False
    if isinstance(node, (cst.Integer, cst.Float, cst.SimpleString, cst.ConcatenatedString, cst.FormattedString,
                         cst.Comparison)):
        return True
    if isinstance(node, cst.Name):
        if node.value in ("True", "False", "None"):
            return True
        values = assigned.get(node.value)
        return bool(values) and all(_python_number(v, assigned, depth + 1) for v in values)
    if isinstance(node, cst.UnaryOperation):
        return isinstance(node.operator, cst.Not) or _python_number(node.expression, assigned, depth + 1)
    if isinstance(node, (cst.BooleanOperation, cst.BinaryOperation)):
        return _python_number(node.left, assigned, depth + 1) and _python_number(node.right, assigned, depth + 1)
    if isinstance(node, (cst.Tuple, cst.List)):
        return all(_python_number(e.value, assigned, depth + 1) for e in node.elements)
    if isinstance(node, cst.Call):
        return last_name(node.func) in _NUMBER_CALLS
    if isinstance(node, cst.IfExp):
        return _python_number(node.body, assigned, depth + 1) and _python_number(node.orelse, assigned, depth + 1)
    return False


def _data_code(parts: List[str]) -> bool:
    """A module of a data pipeline or of metrics, by its path below the
    project root (a name heuristic: no gradient flows there)."""
    return bool(_DATA_FILE.match(parts[-1])) or any(p in _DATA_DIRS for p in parts[:-1])


#: data-pipeline folders, metrics left out
_INPUT_DIRS = _DATA_DIRS - {"metrics"}


def input_pipeline(parts: List[str]) -> bool:
    """A module that prepares a model's inputs (``data``/``dataset(s)``/
    ``dataloaders`` folders, preprocessing and feature-extraction modules), by
    its path below the project root: its tensors come from the data (numpy
    arrays, decoded images, Python numbers) in float32, and neither a model's
    half cast nor autocast reaches them. Metrics and post-processing, which
    read a model's outputs, are not. A name heuristic."""
    return bool(_INPUT_FILE.match(parts[-1])) or any(p in _INPUT_DIRS for p in parts[:-1])


def _transposed_back(ctx, node: cst.BaseExpression) -> bool:
    """``matmul(A, V.transpose(1, 2)).transpose(1, 2)``: a product with a
    transposed operand, transposed back the same way. That is how
    channel-first code (``(B, C, T)`` tensors: TTS, speech) applies an
    alignment ``A`` (``(B, T', T)``) to values: the transposes move the
    channels out of the contracted dimension and back, so ``A`` weighs time
    steps of ``V`` (VITS' ``logs_p``); it sums no products of features, as a
    score ``q @ k.transpose(1, 2)`` does, which is never transposed back
    before its softmax."""
    def dims(call: cst.BaseExpression) -> Optional[str]:
        if isinstance(call, cst.Attribute):
            return "T"
        if isinstance(call, cst.Call) and isinstance(call.func, cst.Attribute) and call.func.attr.value == "transpose":
            return ",".join(ctx.code(a.value) for a in call.args)
        return None
    outer = dims(node)
    inner = node.value if isinstance(node, cst.Attribute) else node.func.value  # type: ignore[union-attr]
    product = look_through(ctx, inner, frozenset({"squeeze", "unsqueeze", "contiguous"}))
    if isinstance(product, cst.BinaryOperation) and isinstance(product.operator, cst.MatrixMultiply):
        right = product.right
    elif isinstance(product, cst.Call) and torch_op(ctx, product) in _SCORE_OPS:
        positional = [a.value for a in product.args if not a.keyword]
        right = positional[1] if len(positional) == 2 else None
    else:
        return False
    return outer is not None and right is not None and dims(right) == outer


def _same(a: Optional[cst.BaseExpression], b: Optional[cst.BaseExpression]) -> bool:
    """The same expression, by structure (``x`` and ``x``, ``h[..., :3]`` twice)."""
    return a is not None and b is not None and (a is b or a.deep_equals(b))


def _is_static(func: cst.FunctionDef) -> bool:
    return any(dotted_name(d.decorator) == "staticmethod" for d in func.decorators)


def _join(a: str, b: str) -> str:
    return a if a == b else UNKNOWN


def _join_all(kinds) -> str:
    kinds = list(kinds)
    if not kinds:
        return UNKNOWN
    first = kinds[0]
    return first if all(k == first for k in kinds) else UNKNOWN


def _is_float_literal(node: cst.BaseExpression) -> bool:
    """``1e6``, ``-0.5``, ``float('inf')``, ``-math.inf``, ``2 ** -1``: a
    Python float, not an int (``-5``, ``2 ** 30``)."""
    if number(node) is None:
        return False
    return any(isinstance(n, (cst.Float, cst.Call, cst.Attribute)) or (
        isinstance(n, cst.BinaryOperation) and (number(n.right) or 0) < 0) for n, _ in iter_tree(node))


def _promote(a: str, b: str, divide: bool) -> str:
    """The dtype class of ``a <op> b`` under torch's promotion rules, as far as
    classes tell: a Python number never widens a tensor; two provably wide or
    host operands stay off float16; an integer tensor divided is float32."""
    if a == b:
        if a == INTEGER and divide:
            return WIDE
        return a
    pair = {a, b}
    if pair == {HOST, INTEGER}:
        return INTEGER if not divide else WIDE
    if pair == {HOST, WIDE} or pair == {INTEGER, WIDE}:
        return WIDE
    if HOST in pair:
        other = (pair - {HOST}).pop()
        return other
    if INTEGER in pair:
        other = (pair - {INTEGER}).pop()
        return other
    return UNKNOWN
