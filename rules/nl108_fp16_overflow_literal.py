from __future__ import annotations

import math
import re
from typing import Dict, List, Optional, Set, Tuple

import libcst as cst

from nanlint.analysis import BF16, HOST, INTEGER, WIDE
from nanlint.dtypes import FLOAT16, fmt
from nanlint.engine import scope_nodes, subtree
from nanlint.finding import HIGH, LOW, UNSAFE
from nanlint.analysis.masks import ORDERINGS, is_mask_factor, only_selected
from nanlint.patterns import arg, is_method_call, is_reference, subject
from nanlint.patterns import number as _any_number
from nanlint.resolve import dotted_name
from nanlint.rule import FixSpec, Invalid, Rule, Valid

# float16 literals at or above max + half the spacing at the top (32 / 2) round to inf:
# 65519 becomes 65504, 65520 becomes inf (measured, torch 2.13)
ROUNDS_TO_INF = FLOAT16.max + FLOAT16.max * FLOAT16.eps / 4
# x / d multiplies by 1/d, beyond 65504 for d below this
TINY_DIVISOR = 1.0 / FLOAT16.max

_FLOAT32_DTYPES = frozenset({"torch.float32", "torch.float", "torch.float64", "torch.double"})
_FLOAT16_DTYPES = frozenset({"torch.float16", "torch.half"})
_NON_FLOAT_DTYPES = frozenset(
    {"torch.int", "torch.int8", "torch.int16", "torch.int32", "torch.int64", "torch.long", "torch.short",
     "torch.uint8", "torch.bool", "torch.uint16", "torch.uint32", "torch.uint64"}
)
_SAFE_DTYPES = _FLOAT32_DTYPES | _NON_FLOAT_DTYPES
# factories whose result is float32 (the default dtype) unless given a dtype
_FACTORIES = frozenset(
    {"zeros", "ones", "full", "empty", "rand", "randn", "randint", "arange", "linspace", "logspace",
     "tensor", "as_tensor", "eye", "scalar_tensor", "from_numpy", "range", "normal", "randperm",
     "empty_strided", "sparse_coo_tensor", "frombuffer", "asarray"}
)
_LIKE_FACTORIES = frozenset({"zeros_like", "ones_like", "full_like", "empty_like", "rand_like", "randn_like"})
# torch functions that do not return a tensor of their argument's dtype
_NOT_TENSOR_OPS = frozenset(
    {"finfo", "iinfo", "is_tensor", "is_floating_point", "numel", "manual_seed", "get_default_dtype",
     "device", "Size", "no_grad", "enable_grad", "is_grad_enabled", "seed", "initial_seed", "isfinite",
     "isnan", "isinf", "argmax", "argmin", "argsort", "nonzero", "bucketize", "searchsorted",
     "count_nonzero", "equal", "allclose", "is_nonzero", "result_type", "promote_types", "can_cast",
     "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_not", "any", "all"}
)
# methods only torch tensors have: their receiver is a tensor
_TENSOR_ONLY_METHODS = frozenset(
    {"view", "view_as", "unsqueeze", "masked_fill", "masked_fill_", "type_as", "half", "softmax",
     "log_softmax", "sigmoid", "detach", "contiguous", "permute", "expand", "expand_as", "exp", "log",
     "sqrt", "rsqrt", "pow", "norm", "bmm", "matmul", "clamp", "clamp_", "clamp_min", "clamp_max",
     "tanh", "relu", "new_zeros", "new_ones", "new_full", "new_empty", "new_tensor", "mul_", "add_",
     "div_", "sub_", "fill_", "zero_", "copy_", "baddbmm", "addmm", "narrow", "repeat_interleave",
     "masked_scatter", "index_select", "gather", "scatter", "scatter_add", "softplus", "logsumexp",
     "amax", "amin", "square", "reciprocal", "float_power", "addcmul", "lerp", "exp_", "log_",
     "requires_grad_", "type", "to", "cuda", "element_size", "nan_to_num", "isnan", "isinf"}
)
_TENSOR_ONLY_ATTRS = frozenset({"device", "grad", "requires_grad", "is_cuda", "grad_fn", "is_leaf", "mT"})
# methods that give a Python number, or a float32/float64/integer tensor
_SAFE_METHODS = frozenset(
    {"float", "double", "long", "int", "bool", "item", "tolist", "numpy", "size", "dim", "numel",
     "nelement", "stride", "data_ptr", "element_size", "argmax", "argmin", "argsort", "nonzero",
     "short", "byte", "char", "count_nonzero", "isnan", "isinf", "isfinite", "eq", "ne", "lt", "le",
     "gt", "ge", "any", "all", "sum_to_size"}
)
# methods that keep their receiver's dtype (numpy has several of them too: follow the receiver)
_SAME_DTYPE_METHODS = frozenset(
    {"sum", "mean", "reshape", "transpose", "max", "min", "abs", "squeeze", "flatten", "clone", "cpu",
     "std", "var", "cumsum", "prod", "t", "T", "sin", "cos", "neg", "mul", "div", "add", "sub",
     "diff", "roll", "flip", "repeat", "unfold", "chunk", "split", "tril", "triu", "diagonal",
     "clip", "clip_", "round"}
)
_NON_TORCH_MODULES = ("math.", "numpy.", "time.", "random.", "datetime.", "np.", "jax.", "scipy.", "os.", "sys.")
_TIME_WORDS = re.compile(
    r"(?:^|_)(?:time|times|elapsed|duration|secs?|seconds|ms|msec|us|usec|ns|latency|timestamp|"
    r"tic|toc|clock|timeout|fps|hz|bytes|mem|memory|flops|lr|seed|epoch|epochs|steps?|iters?)(?:_|$)",
    re.IGNORECASE,
)
_CLAMPS = {
    # op: (method positions (min, max), function positions (min, max))
    "clamp": ((0, 1), (1, 2)), "clamp_": ((0, 1), (1, 2)), "clip": ((0, 1), (1, 2)),
    "clip_": ((0, 1), (1, 2)), "clamp_max": ((None, 0), (None, 1)), "clamp_max_": ((None, 0), (None, 1)),
    "clamp_min": ((0, None), (1, None)), "clamp_min_": ((0, None), (1, None)),
}
_ARITH_CALLS = {
    "mul": "*", "mul_": "*", "multiply": "*", "multiply_": "*", "div": "/", "div_": "/", "divide": "/",
    "divide_": "/", "true_divide": "/", "true_divide_": "/", "add": "+", "add_": "+", "sub": "-",
    "sub_": "-", "subtract": "-", "subtract_": "-",
}


class Fp16OverflowLiteral(Rule):
    """
    ## What it does
    Flags numeric literals beyond float16's range combined with a tensor:
    `x * 1e5`, `1e6 / x`, `x + 1e5`, `x *= 1e5`, `x.mul_(1e5)`, a division by a
    literal below 1/65504 = 1.53e-5 (`scores / 1e-5` multiplies by 1e5), a
    clamp bound (`x.clamp(max=1e6)`, `torch.clamp(x, -1e5, 1e5)`,
    `clamp_max(1e6)`), a fill (`x.fill_(1e5)`, `x.new_full(size, 1e5)`,
    `torch.full_like(x, 1e5)`, `torch.full(size, 1e5, dtype=x.dtype)`,
    `torch.tensor(1e5, dtype=x.dtype)`) and a replacement in
    `torch.nan_to_num(x, posinf=1e6)`. Only active when float16 is a target
    dtype.

    It reports only where a tensor operand is plausible: a torch operation or
    tensor method, or a name the function uses as a tensor (a tensor method is
    called on it, it is passed to a torch function, it is annotated `Tensor`,
    or it was assigned such a value). Not flagged: Python-scalar arithmetic
    (`steps * 1e6`, `elapsed * 1e9`, config values), integer literals unless
    the tensor is certainly floating point, literals combined with a tensor
    known to be float32/float64 or integer (`x.float() * 1e5`,
    `torch.ones(n, dtype=torch.float32)`, `x.long()`), factories without a
    dtype (float32 by default), and mask fills (`masked_fill`, `torch.where`,
    `x[mask] = ...`, `mask * -1e9`), which are NL003's. A replacement in a
    parameter's gradient (`nan_to_num(p.grad, posinf=1e5)`) is low unless the
    file casts the model itself to half: the gradient has the parameter's
    dtype, float32 under AMP.

    ## Why is this bad?
    float16's largest finite value is 65504 and every literal from 65520 up
    rounds to inf (65519 to 65504). `x * 1e5` is inf for every |x| >= 0.655,
    `x / 1e-5` likewise, `x + 1e5` always; the next subtraction or
    normalisation turns the inf into NaN. `nanlint confirm` proves these with
    a new-inf event at the line. The fill and clamp forms do not even run:
    `half.clamp(max=1e6)`, `clamp(max=65510.0)`, `torch.full(..., 1e5,
    dtype=torch.float16)` and `half.fill_(1e5)` raise `RuntimeError: value
    cannot be converted to type c10::Half without overflow`, and
    `torch.tensor(1e5, dtype=torch.float16)` is silently inf (new-inf).
    `nan_to_num(x, posinf=1e6)` on a float16 tensor leaves +inf as inf, so the
    guard does nothing.

    ## Example
    ```python
    logits = logits.clamp(min=-1e6, max=1e6)
    scores = scores * 1e5
    ```

    ## Use instead
    ```python
    logits = logits.clamp(min=torch.finfo(logits.dtype).min, max=torch.finfo(logits.dtype).max)
    scores = scores.float() * 1e5  # or a scale float16 can hold
    ```

    ## Fix safety
    Unsafe: only clamp bounds and `nan_to_num` replacements get a fix, which
    replaces the literal by `torch.finfo(x.dtype).max` (`.min` for a negative
    bound) of the clamped tensor `x`, offered when `x` is a plain name or
    attribute. In float32 this moves the bound from the literal to 3.4e38,
    which changes results for values in between. Arithmetic with a large
    constant has no mechanical fix (compute in float32, or rescale).
    """

    code = "NL108"
    float16_only = True
    name = "fp16-overflow-literal"
    summary = "literal beyond 65504 combined with a tensor: inf (or a RuntimeError) in float16"
    fix_applicability = UNSAFE
    # the digit-led alternatives share one `\d`: one scan of the text instead of four
    triggers = (
        re.compile(
            r"\d(?:[eE]\+?0*(?:[4-9]|\d\d)|\d{4}|_\d{3}|\s*\*\*\s*\(?-?\d)|0[xX]|/=?\s*\(?\s*-?\s*[\d.]+[eE]-"
            r"|div(?:ide)?_?\([^)]*\d[eE]-|\.0000"
        ),
    )
    valid = [
        Valid("import torch\ndef f(x):\n    return x.float() * 1e5\n"),
        Valid("import time\nstart = time.time()\nelapsed_us = (time.time() - start) * 1e6\n"),
        Valid("import torch\ndef f(steps):\n    return steps * 1e6\n"),
        Valid("import torch\ndef f(x):\n    return x.masked_fill(x > 0, 1e5)\n"),
        Valid("import torch\nt = torch.tensor(1e5, dtype=torch.long)\nu = torch.full((3,), 1e5)\n"),
        Valid("import torch\ndef f(x: torch.Tensor):\n    return x * 1e-5 + 1e4\n"),
        Valid("import torch\ndef f(idx: torch.Tensor):\n    return idx.clamp(max=100000)\n"),
    ]
    invalid = [
        Invalid(
            "import torch\ndef f(logits: torch.Tensor):\n    return logits.clamp(min=-1e6, max=1e6)\n",
            fixed=(
                "import torch\ndef f(logits: torch.Tensor):\n"
                "    return logits.clamp(min=torch.finfo(logits.dtype).min, max=torch.finfo(logits.dtype).max)\n"
            ),
            count=2,
        ),
        Invalid("import torch\ndef f(q, k):\n    scores = torch.matmul(q, k.transpose(-1, -2))\n    return scores / 1e-5\n"),
        Invalid("import torch\ndef f(x):\n    return torch.softmax(x, -1) * 1e5\n"),
        Invalid("import torch\ndef f(x):\n    return x.new_full(x.shape, 1e5)\n"),
        Invalid(
            "import torch as T\ndef f(h):\n    return T.nan_to_num(h.view(-1), posinf=1e6)\n",
        ),
    ]

    def __init__(self, ctx, options=None) -> None:
        super().__init__(ctx, options)
        # per function (index 0: module): name/attribute text -> value (None: unknown)
        self.scopes: List[Dict[str, Optional[cst.BaseExpression]]] = [{}]
        self.params: List[Dict[str, Optional[cst.Param]]] = [{}]
        self.functions: List[Optional[cst.FunctionDef]] = [None]
        self._evidence: Dict[int, Set[str]] = {}

    # -- scopes -----------------------------------------------------------------------
    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        params: Dict[str, Optional[cst.Param]] = {}
        p = node.params
        for param in (*p.posonly_params, *p.params, *p.kwonly_params):
            params[param.name.value] = param
        for star in (p.star_arg, p.star_kwarg):
            if isinstance(star, cst.Param):
                params[star.name.value] = None
        self.scopes.append({})
        self.params.append(params)
        self.functions.append(node)

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.scopes.pop()
        self.params.pop()
        self.functions.pop()

    def leave_Assign(self, node: cst.Assign) -> None:
        for target in node.targets:
            self._bind(target.target, node.value)

    def leave_AnnAssign(self, node: cst.AnnAssign) -> None:
        self._bind(node.target, node.value)

    def visit_For(self, node: cst.For) -> None:
        self._bind(node.target, None)

    def _bind(self, target: cst.BaseExpression, value: Optional[cst.BaseExpression]) -> None:
        if isinstance(target, (cst.Tuple, cst.List)):
            for element in target.elements:
                self._bind(element.value, None)
            return
        text = dotted_name(target)
        if text is not None:
            self.scopes[-1][text] = value

    def _lookup(self, text: str) -> Tuple[bool, Optional[cst.BaseExpression]]:
        """(bound in this function or at module level, its value)."""
        if text in self.scopes[-1]:
            return True, self.scopes[-1][text]
        if text in self.params[-1]:
            return True, None
        if text in self.scopes[0]:
            return True, self.scopes[0][text]
        return False, None

    # -- what a value is -----------------------------------------------------------------
    def _evidence_names(self) -> Set[str]:
        """Names and attributes the current function uses as tensors."""
        func = self.functions[-1]
        key = id(func) if func is not None else 0
        found = self._evidence.get(key)
        if found is not None:
            return found
        found = set()
        root: cst.CSTNode = func if func is not None else self.ctx.module
        if func is not None:
            for name, param in self.params[-1].items():
                if param is not None and param.annotation is not None and "Tensor" in self.ctx.code(param.annotation.annotation):
                    found.add(name)
        for n in scope_nodes(root):
            if isinstance(n, cst.Attribute) and n.attr.value in _TENSOR_ONLY_ATTRS | _TENSOR_ONLY_METHODS:
                text = dotted_name(n.value)
                if text is not None and self.ctx.resolve(n.value) is None:
                    found.add(text)
            elif isinstance(n, cst.Call):
                qualified = self.ctx.resolve(n.func)
                if qualified is None or not _tensor_namespace(qualified):
                    continue
                short = qualified.rsplit(".", 1)[-1]
                if short in _FACTORIES or short in _NOT_TENSOR_OPS or ".cuda." in qualified or qualified.startswith("torch.nn.init"):
                    continue
                for a in n.args:
                    if a.keyword is not None:
                        continue
                    values = [e.value for e in a.value.elements] if isinstance(a.value, (cst.List, cst.Tuple)) else [a.value]
                    for v in values:
                        text = dotted_name(v)
                        if text is not None and self.ctx.resolve(v) is None:
                            found.add(text)
        self._evidence[key] = found
        return found

    def _dtype_kw(self, call: cst.Call) -> Optional[str]:
        """"safe" (float32/64/integer), "half" (float16) or "other" for a dtype= argument, None without."""
        for a in call.args:
            if a.keyword is not None and a.keyword.value == "dtype":
                qualified = self.ctx.resolve(a.value)
                if qualified in _SAFE_DTYPES:
                    return "safe"
                if qualified in _FLOAT16_DTYPES:
                    return "half"
                if isinstance(a.value, cst.Name) and a.value.value in ("float", "int", "bool"):
                    return "safe"
                return "other"
        return None

    def _safe(self, node: cst.BaseExpression, depth: int = 0) -> bool:
        """Known not to be a float16 tensor: a float32/float64/integer tensor or a Python value."""
        if depth > 8:
            return False
        if number(node) is not None or isinstance(node, (cst.SimpleString, cst.FormattedString, cst.ConcatenatedString)):
            return True
        if isinstance(node, (cst.Name, cst.Attribute)):
            text = dotted_name(node)
            if text is None:
                return False
            bound, value = self._lookup(text)
            if bound and value is not None:
                return self._safe(value, depth + 1)
            if text in self.params[-1]:
                param = self.params[-1][text]
                if param is not None and param.default is not None and number(param.default) is not None:
                    return text not in self._evidence_names()  # a Python number by default
                if param is not None and param.annotation is not None:
                    ann = self.ctx.code(param.annotation.annotation).strip()
                    return ann in ("int", "float", "bool")
            qualified = self.ctx.resolve(node)
            return qualified is not None and qualified.startswith(_NON_TORCH_MODULES)
        if isinstance(node, cst.Subscript):
            return self._safe(node.value, depth + 1)
        if isinstance(node, cst.UnaryOperation):
            return self._safe(node.expression, depth + 1)
        if isinstance(node, cst.BinaryOperation):
            left, right = self._safe(node.left, depth + 1), self._safe(node.right, depth + 1)
            return (left and right) or self._float32(node.left) or self._float32(node.right)
        if isinstance(node, cst.Call):
            if self._dtype_kw(node) == "safe":
                return True
            func = node.func
            qualified = self.ctx.resolve(func)
            if qualified is not None:
                if qualified.startswith(_NON_TORCH_MODULES):
                    return True
                short = qualified.rsplit(".", 1)[-1]
                return qualified.startswith("torch.") and short in _FACTORIES and self._dtype_kw(node) is None
            if isinstance(func, cst.Name):
                return func.value in ("float", "int", "len", "round", "sum", "abs", "min", "max", "pow", "bool")
            if isinstance(func, cst.Attribute):
                method = func.attr.value
                if method in _SAFE_METHODS:
                    return True
                if method in ("to", "type") and node.args:
                    first = node.args[0].value
                    if self.ctx.resolve(first) in _SAFE_DTYPES:
                        return True
                if method in _SAME_DTYPE_METHODS:
                    return self._safe(func.value, depth + 1)
        return False

    def _float32(self, node: cst.BaseExpression) -> bool:
        """A tensor explicitly made float32/float64 (it promotes the whole expression)."""
        if isinstance(node, cst.Call):
            if self._dtype_kw(node) == "safe" and any(
                self.ctx.resolve(a.value) in _FLOAT32_DTYPES for a in node.args if a.keyword is not None
            ):
                return True
            func = node.func
            if isinstance(func, cst.Attribute) and self.ctx.resolve(func) is None:
                if func.attr.value in ("float", "double"):
                    return True
                if func.attr.value in ("to", "type") and node.args and self.ctx.resolve(node.args[0].value) in _FLOAT32_DTYPES:
                    return True
        if isinstance(node, cst.Name):
            bound, value = self._lookup(node.value)
            if bound and value is not None and value is not node:
                return self._float32(value)
        return False

    def _tensor(self, node: cst.BaseExpression, depth: int = 0) -> str:
        """"half" (certainly float16), "float" (certainly a floating tensor), "tensor"
        (plausibly a float16 tensor) or "" (not known to be a tensor, or known safe)."""
        if depth > 8 or self._safe(node):
            return ""
        if depth == 0 and self.ctx.facts.dtype(node) in (WIDE, BF16, INTEGER, HOST):
            return ""  # the shared dtype facts: float32 through names and indexing (`out[0].float()[i]`)
        if isinstance(node, (cst.Name, cst.Attribute)):
            text = dotted_name(node)
            if text is None:
                return ""
            if _TIME_WORDS.search(text.rsplit(".", 1)[-1]):
                return ""
            bound, value = self._lookup(text)
            if bound and value is not None:
                if isinstance(value, _CONTAINERS):
                    return ""  # a list of tensors may mix dtypes: `state[4]` is unknown
                found = self._tensor(value, depth + 1)
                if found:
                    return found
            return "tensor" if text in self._evidence_names() else ""
        if isinstance(node, cst.Subscript):
            return self._tensor(node.value, depth + 1)
        if isinstance(node, cst.UnaryOperation):
            return self._tensor(node.expression, depth + 1)
        if isinstance(node, cst.BinaryOperation):
            left, right = self._tensor(node.left, depth + 1), self._tensor(node.right, depth + 1)
            if isinstance(node.operator, cst.MatrixMultiply) and (left or right):
                return "float"
            for kind in ("half", "float", "tensor"):
                if kind in (left, right):
                    return kind
            return ""
        if isinstance(node, cst.Call):
            dtype = self._dtype_kw(node)
            if dtype == "half":
                return "half"
            func = node.func
            qualified = self.ctx.resolve(func)
            if qualified is not None:
                if not _tensor_namespace(qualified):
                    return ""
                short = qualified.rsplit(".", 1)[-1]
                if short in _NOT_TENSOR_OPS:
                    return ""
                if short in _FACTORIES:
                    return "tensor" if dtype == "other" else ""
                if short in _LIKE_FACTORIES:
                    first = arg(node, 0, "input")
                    return self._tensor(first.value, depth + 1) if first is not None and dtype is None else (
                        "tensor" if dtype == "other" else "")
                if short in _FLOAT_OPS:
                    return "float"
                for a in node.args:
                    if a.keyword is None:
                        found = self._tensor(a.value, depth + 1)
                        if found:
                            return found
                return "tensor" if qualified.startswith("torch.nn.functional.") else ""
            if isinstance(func, cst.Attribute):
                method = func.attr.value
                receiver = func.value
                if method == "half":
                    return "half"
                if method in ("to", "type") and node.args and self.ctx.resolve(node.args[0].value) in _FLOAT16_DTYPES:
                    return "half"
                if method in _FLOAT_OPS and method in _TENSOR_ONLY_METHODS:
                    return "float"
                if method in _TENSOR_ONLY_METHODS:
                    return self._tensor(receiver, depth + 1) or "tensor"
                if method in _SAME_DTYPE_METHODS:
                    return self._tensor(receiver, depth + 1)
        return ""

    # -- detection --------------------------------------------------------------------------
    def visit_BinaryOperation(self, node: cst.BinaryOperation) -> None:
        op = node.operator
        if isinstance(op, cst.Multiply):
            symbol = "*"
        elif isinstance(op, cst.Divide):
            symbol = "/"
        elif isinstance(op, cst.Add):
            symbol = "+"
        elif isinstance(op, cst.Subtract):
            symbol = "-"
        else:
            return
        self._arith(node, symbol, node.left, node.right)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        symbols = {cst.MultiplyAssign: "*", cst.DivideAssign: "/", cst.AddAssign: "+", cst.SubtractAssign: "-"}
        symbol = symbols.get(type(node.operator))
        if symbol is not None:
            self._arith(node, symbol, node.target, node.value, literal_left=False)

    def _arith(self, node: cst.CSTNode, symbol: str, left: cst.BaseExpression, right: cst.BaseExpression,
               literal_left: bool = True) -> None:
        sides = [(right, left, "right")]
        if literal_left:
            sides.append((left, right, "left"))
        for lit, other, where in sides:
            value = number(lit)
            if value is None or value != value:
                continue
            kind = self._hazard_kind(value, symbol, where)
            if kind is None:
                continue
            if symbol == "*" and is_mask_factor(self.ctx.facts, other, positive=value > 0):
                continue  # NL003's additive-mask product
            tensor = self._tensor(other)
            if not tensor or (not _has_float(lit) and tensor == "tensor"):
                continue
            if kind == "offset" and self.ctx.facts.only_ordered(node):
                continue  # `zeros_like(x) + 1e9`, a running minimum's start: inf compares the same
            self.report(lit, self._arith_message(lit, value, symbol, where, kind))
            return

    def _hazard_kind(self, value: float, symbol: str, where: str) -> Optional[str]:
        big = abs(value) > FLOAT16.max
        if symbol == "*" and big:
            return "scale"
        if symbol == "/" and where == "right" and 0 < abs(value) < TINY_DIVISOR:
            return "tiny"
        if symbol == "/" and where == "left" and big:
            return "numerator"
        if symbol in "+-" and big:
            return "offset"
        return None

    def _arith_message(self, lit: cst.BaseExpression, value: float, symbol: str, where: str, kind: str) -> str:
        text = self.ctx.code(lit).strip()
        top = fmt(FLOAT16.max)
        if kind == "scale":
            return (
                f"`{symbol} {text}` on a tensor: {text} is beyond float16's max {top}, so the product is inf "
                f"for every |x| >= {fmt(FLOAT16.max / abs(value))} in float16"
            )
        if kind == "tiny":
            return (
                f"`/ {text}` on a tensor multiplies by {fmt(1 / abs(value))}, beyond float16's max {top}: "
                f"inf for every |x| >= {fmt(FLOAT16.max * abs(value))} in float16"
            )
        if kind == "numerator":
            return (
                f"`{text} /` a tensor: {text} is beyond float16's max {top}, so the quotient is inf "
                f"for every |x| <= {fmt(abs(value) / FLOAT16.max)} in float16"
            )
        sign = "-" if value < 0 else ""
        rounded = f"rounds to {sign}inf" if abs(value) >= ROUNDS_TO_INF else f"is beyond float16's max {top}"
        return f"`{symbol} {text}` on a tensor: {text} {rounded} in float16, so the result overflows to inf"

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        qualified = self.ctx.resolve(func)
        method = is_method_call(self.ctx, node)
        if qualified is not None:
            if not qualified.startswith("torch."):
                return
            op = qualified.rsplit(".", 1)[-1]
        elif isinstance(func, cst.Attribute):
            op = func.attr.value
        else:
            return
        if op in _CLAMPS:
            self._clamp(node, op, method)
        elif op == "nan_to_num" or op == "nan_to_num_":
            self._nan_to_num(node, method)
        elif op in ("fill_", "new_full") and method:
            self._fill(node, op, arg(node, 0 if op == "fill_" else 1, "value" if op == "fill_" else "fill_value"), func.value)  # type: ignore[union-attr]
        elif op in ("full", "full_like", "tensor", "as_tensor", "scalar_tensor") and not method:
            self._factory(node, op)
        elif op in _ARITH_CALLS:
            self._arith_call(node, op, method)

    def _clamp(self, call: cst.Call, op: str, method: bool) -> None:
        x = subject(self.ctx, call)
        if x is None:
            return
        tensor = self._tensor(x)
        if method and not tensor and (op.startswith("clip") or dotted_name(x) in ("self", "cls")):
            return  # numpy arrays have .clip too; `self.clamp(...)` is the class's own method
        if self._safe(x) or self._float32(x) or self.ctx.facts.dtype(x) in (WIDE, BF16, INTEGER, HOST):
            return  # the shared facts: a decomposition's eigenvalues, a `.float()` through names
        positions = _CLAMPS[op][0 if method else 1]
        for position, keyword in zip(positions, ("min", "max")):
            if position is None:
                continue
            bound = arg(call, position, keyword)
            if bound is None:
                continue
            value = number(bound.value)
            if value is None or abs(value) <= FLOAT16.max:
                continue
            if not _has_float(bound.value) and tensor not in ("half", "float"):
                continue  # an integer bound: maybe an integer tensor
            text = self.ctx.code(bound.value).strip()
            self.report(
                bound.value,
                f"`{op}` bound {text} is beyond float16's max {fmt(FLOAT16.max)}: on a float16 tensor `{op}` raises "
                f"\"value cannot be converted to type c10::Half without overflow\"; use "
                f"`torch.finfo({_name(self.ctx, x)}.dtype).{'min' if value < 0 else 'max'}`",
                self._finfo_fix(bound.value, x, value),
            )

    def _nan_to_num(self, call: cst.Call, method: bool) -> None:
        x = subject(self.ctx, call)
        if x is None or self._safe(x) or self._float32(x):
            return
        if method and not self._tensor(x):
            return
        offset = 0 if method else 1
        gradient = self._gradient_note(x, call)
        for index, keyword in enumerate(("nan", "posinf", "neginf")):
            a = arg(call, offset + index, keyword)
            if a is None:
                continue
            value = number(a.value)
            if value is None or abs(value) < ROUNDS_TO_INF:
                continue
            text = self.ctx.code(a.value).strip()
            self.report(
                a.value,
                f"`nan_to_num({keyword}={text})`: {text} rounds to {'-' if value < 0 else ''}inf in float16 "
                f"(max {fmt(FLOAT16.max)}), so on a float16 tensor the replacement is itself infinite and the "
                f"guard does nothing; use `torch.finfo({_name(self.ctx, x)}.dtype).{'min' if value < 0 else 'max'}`"
                f"{'' if keyword == 'nan' else ' (the default)'}" + gradient,
                self._finfo_fix(a.value, x, value),
                confidence=LOW if gradient else HIGH,
            )

    def _gradient_note(self, x: cst.BaseExpression, site: cst.CSTNode) -> str:
        """A parameter's gradient has the parameter's dtype: float32 under AMP and
        in float32 training, float16 only where the model itself is cast to half,
        which this file does not show (``p.grad`` of ``model.parameters()``)."""
        if not (isinstance(x, cst.Attribute) and x.attr.value == "grad"):
            return ""
        if self.ctx.facts.safeguards.precision(site) == "half":
            return ""
        return (" (a parameter's gradient has the parameter's dtype, float32 unless the model itself is cast to "
                "half, which this file does not show)")

    def _fill(self, call: cst.Call, op: str, value_arg: Optional[cst.Arg], receiver: cst.BaseExpression) -> None:
        if value_arg is None:
            return
        value = number(value_arg.value)
        if value is None or abs(value) < ROUNDS_TO_INF:
            return
        tensor = self._tensor(receiver)
        if op == "new_full" and self._dtype_kw(call) is not None:
            tensor = {"half": "half", "other": tensor or "tensor"}.get(self._dtype_kw(call) or "", "")
        if not tensor or (not _has_float(value_arg.value) and tensor == "tensor"):
            return
        text = self.ctx.code(value_arg.value).strip()
        self.report(
            value_arg.value,
            f"`{op}` with {text}, beyond float16's max {fmt(FLOAT16.max)}: on a float16 tensor it raises "
            f"\"value cannot be converted to type c10::Half without overflow\"",
        )

    def _factory(self, call: cst.Call, op: str) -> None:
        dtype = self._dtype_kw(call)
        if op in ("full", "full_like"):
            value_arg = arg(call, 1, "fill_value")
        else:
            value_arg = arg(call, 0, "data")
        if value_arg is None:
            return
        value = number(value_arg.value)
        if value is None or abs(value) < ROUNDS_TO_INF:
            return
        if op == "full_like" and dtype is None:
            source = arg(call, 0, "input")
            tensor = self._tensor(source.value) if source is not None else ""
            if not tensor or (not _has_float(value_arg.value) and tensor == "tensor"):
                return
        elif dtype not in ("half", "other"):
            return
        elif dtype == "other" and not _has_float(value_arg.value):
            return
        if op not in ("full", "full_like") and self._sorting_sentinel(call):
            return
        text = self.ctx.code(value_arg.value).strip()
        if op in ("full", "full_like"):
            consequence = "raises \"value cannot be converted to type c10::Half without overflow\""
        else:
            consequence = "is silently inf"
        self.report(
            value_arg.value,
            f"`torch.{op}` of {text}, beyond float16's max {fmt(FLOAT16.max)}: with a float16 dtype it {consequence}",
        )

    def _sorting_sentinel(self, call: cst.Call) -> bool:
        """``torch.where(d == 0, torch.tensor(1e10, dtype=d.dtype), d)``
        whose result is only sorted or reduced by max/min/topk: as inf the
        sentinel orders the same, so float16 changes nothing."""
        up = self.ctx.facts.scopes.parent.get(call)
        if not isinstance(up, cst.Arg) or up.keyword is not None:
            return False
        where = self.ctx.facts.scopes.parent.get(up)
        if not isinstance(where, cst.Call) or self.ctx.resolve(where.func) != "torch.where":
            return False
        if len(where.args) != 3 or where.args[0] is up:
            return False
        return only_selected(self.ctx.facts, where, selections=ORDERINGS)

    def _arith_call(self, call: cst.Call, op: str, method: bool) -> None:
        symbol = _ARITH_CALLS[op]
        if method:
            x = call.func.value  # type: ignore[union-attr]
            other = arg(call, 0, "other")
        else:
            first = arg(call, 0, "input")
            if first is None:
                return
            x = first.value
            other = arg(call, 1, "other")
        if other is None:
            return
        value = number(other.value)
        if value is None:
            return
        kind = self._hazard_kind(value, symbol, "right")
        if kind is None:
            return
        tensor = self._tensor(x)
        if method and not tensor and op not in ("mul_", "div_", "add_", "sub_"):
            return
        if not tensor and not method:
            return
        if self._safe(x):
            return
        if not _has_float(other.value) and tensor not in ("half", "float"):
            return
        self.report(other.value, self._arith_message(other.value, value, symbol, "right", kind))

    def _finfo_fix(self, literal: cst.BaseExpression, x: cst.BaseExpression, value: float) -> Optional[FixSpec]:
        if not is_reference(x) or x.lpar:
            return None
        torch = self.ctx.torch_name()
        new = f"{torch}.finfo({self.ctx.code(x).strip()}.dtype).{'min' if value < 0 else 'max'}"
        return FixSpec(
            UNSAFE,
            "Use the tensor dtype's own finite limit",
            replace=[(literal, new)],
            imports=("torch",),
        )


# ops whose result is certainly floating point (given a float or integer input)
_FLOAT_OPS = frozenset(
    {"softmax", "log_softmax", "sigmoid", "exp", "log", "tanh", "sqrt", "rsqrt", "matmul", "bmm", "mm",
     "linear", "layer_norm", "mean", "randn_like", "rand_like", "softplus", "gelu", "silu", "erf",
     "cosine_similarity", "normalize", "baddbmm", "addmm", "einsum", "scaled_dot_product_attention",
     "logsumexp", "conv1d", "conv2d", "conv3d", "std", "var", "reciprocal", "float_power"}
)


_CONTAINERS = (cst.List, cst.ListComp, cst.Tuple, cst.Dict, cst.DictComp, cst.Set, cst.SetComp, cst.GeneratorExp)
_TENSOR_NAMESPACES = frozenset({"torch", "torch.nn.functional", "torch.special", "torch.linalg", "torch.fft"})


def _tensor_namespace(qualified: str) -> bool:
    """`torch.exp`, `torch.nn.functional.softmax`: public tensor operations (not
    `torch.cuda.*` or internal helpers such as `torch._inductor...`)."""
    return qualified.rpartition(".")[0] in _TENSOR_NAMESPACES


def number(node: cst.BaseExpression) -> Optional[float]:
    """A finite numeric literal's value (infinities are deliberate, and NL003's)."""
    value = _any_number(node)
    if value is None or value != value or math.isinf(value):
        return None
    return value


def _name(ctx, x: cst.BaseExpression) -> str:
    """How a message names the tensor: its own text when short, else `x`."""
    text = ctx.code(x).strip()
    return text if is_reference(x) and len(text) <= 30 else "x"


def _has_float(node: cst.CSTNode) -> bool:
    """The literal is written as a float (`1e5`, `100000.0`, `2.0 ** 20`)."""
    return any(isinstance(n, cst.Float) for n in subtree(node))


