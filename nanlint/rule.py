"""What a rule is, and what it may ask of the file it looks at.

A rule is a subclass of :class:`Rule` in its own file under ``rules/``. Its class
attributes are its metadata, its docstring is its documentation (in the shape
*What it does / Why is this bad? / Example / Use instead / Fix safety*), its
``valid``/``invalid`` examples are run by the test-suite, and its
``visit_<Node>``/``leave_<Node>`` methods (libcst node class names) are called
by the engine during the single traversal of each file. A rule reports with
``self.report(node, message, fix=...)``; it never reads files, parses, prints
or decides exit codes.

The traversal visits nodes in source order but skips whitespace, comments,
parentheses and operator tokens: inspect those through their parent node.
"""

from __future__ import annotations

import inspect
import os
import re
import textwrap
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Union

import libcst as cst

from .dtypes import DtypeFacts, targets_float16
from .finding import APPLICABILITIES, CONFIDENCES, HIGH, LOW, MEDIUM
from .positions import NodeText
from .analysis.project import TEST_DIRS as _TEST_DIRS, TEST_FILE as _TEST_FILE, parts_below, runs_pure_half
from .resolve import Names


@dataclass(frozen=True)
class Valid:
    """Code the rule must not report."""

    code: str

    def source(self) -> str:
        return textwrap.dedent(self.code).lstrip("\n")


@dataclass(frozen=True)
class Invalid:
    """Code the rule must report (``count`` times), and its text once every fix
    of the rule, safe and unsafe, is applied (``fixed``; None when the rule
    offers no fix for it)."""

    code: str
    fixed: Optional[str] = None
    count: int = 1

    def source(self) -> str:
        return textwrap.dedent(self.code).lstrip("\n")

    def fixed_source(self) -> Optional[str]:
        if self.fixed is None:
            return None
        return textwrap.dedent(self.fixed).lstrip("\n")


Replacement = Union[cst.CSTNode, str]


@dataclass
class FixSpec:
    """A fix as a rule describes it, in terms of nodes; the engine turns it
    into text edits once it knows where the nodes are.

    - ``replace``: (node, new node or code) -- the node's text, without its own
      parentheses, becomes the new code.
    - ``insert_before`` / ``insert_after``: (statement, code) -- new statement
      lines at the statement's indentation. The statement must start its line.
    - ``imports``: modules the new code needs (``"math"``, ``"torch"``); an
      ``import X`` is added unless the file already binds X.
    """

    applicability: str
    message: str
    replace: List[Tuple[cst.CSTNode, Replacement]] = field(default_factory=list)
    insert_before: List[Tuple[cst.CSTNode, str]] = field(default_factory=list)
    insert_after: List[Tuple[cst.CSTNode, str]] = field(default_factory=list)
    imports: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.applicability not in APPLICABILITIES:
            raise ValueError(f"applicability must be one of {APPLICABILITIES}")


@dataclass
class Report:
    rule: "Rule"
    node: cst.CSTNode
    message: str
    fix: Optional[FixSpec]
    confidence: str = HIGH


class Context:
    """Everything a rule may know about the file being checked."""

    def __init__(
        self,
        path: str,
        source: str,
        module: cst.Module,
        names: Names,
        dtypes: Sequence[DtypeFacts],
        project=None,
    ) -> None:
        self.path = path
        #: the file's view of the checked project (:class:`nanlint.analysis.project.ProjectFile`),
        #: None when the source is not a file of a project (a snippet)
        self.project = project
        self.source = source
        self.module = module
        self.names = names
        #: the target dtypes from the configuration (float16 first when present)
        self.dtypes: Tuple[DtypeFacts, ...] = tuple(dtypes)
        self.reports: List[Report] = []
        self._text = NodeText(module, len(source))
        self._facts = None
        self._test_code: Optional[bool] = None
        self._jax_code: Optional[bool] = None
        self._float32_script: Optional[bool] = None
        self._main_block: Optional[bool] = None
        #: node -> its children, shared by the engine's traversal and the analysis
        self.kids: Dict[cst.CSTNode, List[cst.CSTNode]] = {}
        self._path_parts: Optional[List[str]] = None

    @property
    def main_block(self) -> bool:
        """The file has a top-level ``if __name__ == "__main__":`` block (a
        program; an ``__init__`` never counts)."""
        if self._main_block is None:
            self._main_block = not self.path.endswith("__init__.py") and has_main_block(self.module, self.source)
        return self._main_block

    @property
    def float32_script(self) -> bool:
        """The file is a whole training program (it calls ``.backward()`` and
        has an ``if __name__ == "__main__":`` block or a top-level loop; a
        model file with a demo block does not count) and nothing in it names
        reduced precision: no ``half``/``float16``/``fp16``/``bfloat16``/``bf16``,
        ``autocast``, ``GradScaler``, ``amp``, ``precision=`` /
        ``mixed_precision`` setting, ``Accelerator`` or ``deepspeed``. Such a
        script runs its model in float32, so a float16 finding there depends
        on a use the code does not show (low)."""
        if self._float32_script is None:
            self._float32_script = _is_float32_script(self.module, self.source)
        return self._float32_script

    @property
    def jax_code(self) -> bool:
        """The file computes with JAX: it imports ``jax`` or ``flax``, and from
        torch at most utilities (``torch.utils.tensorboard``, ``torch.utils.data``).
        Its arrays are JAX's, whose dtypes and ops the torch rules do not model."""
        if self._jax_code is None:
            self._jax_code = bool(_JAX_IMPORT.search(self.source)) and not any(
                not m.group(1).startswith("torch.utils") for m in _TORCH_IMPORT.finditer(self.source))
        return self._jax_code

    @property
    def test_code(self) -> bool:
        """The file is test code: a ``test``/``tests``/``testing`` folder (below
        the project root, or the package root when the file lies outside it), or
        ``test_*.py``, ``*_test.py``, ``*_tests.py``, ``conftest.py``. Tests feed
        their own synthetic inputs, so no finding there is high confidence."""
        if self._test_code is None:
            parts = self.path_parts
            self._test_code = bool(_TEST_FILE.match(parts[-1])) or any(p in _TEST_DIRS for p in parts[:-1])
        return self._test_code

    @property
    def input_pipeline(self) -> bool:
        """The file prepares a model's inputs, by its path (see
        :func:`nanlint.analysis.values.input_pipeline`)."""
        from .analysis.values import input_pipeline

        return input_pipeline(self.path_parts)

    @property
    def path_parts(self) -> List[str]:
        """The parts of the file's path below its project root (or its
        package root when the file lies outside it); the base name of a
        loose file."""
        if self._path_parts is None:
            self._path_parts = _relative_parts(self.path, self.project)
        return self._path_parts

    def _outermost_definition(self, node: cst.CSTNode) -> Optional[cst.CSTNode]:
        """The module-level function, class or lambda holding ``node``, or None."""
        found = None
        for up in self.facts.scopes.ancestors(node):
            if isinstance(up, (cst.FunctionDef, cst.ClassDef, cst.Lambda)):
                found = up
        return found

    def only_tested_function(self, node: cst.CSTNode) -> Optional[str]:
        """The name of the module-level function holding ``node`` when only
        test code runs it (:meth:`nanlint.analysis.Facts.only_tests_call`), else None."""
        if self.project is None or self.test_code:
            return None
        func = self._outermost_definition(node)
        if not isinstance(func, cst.FunctionDef) or not self.facts.only_tests_call(func):
            return None
        return func.name.value

    def uncalled_function(self, node: cst.CSTNode) -> Optional[str]:
        """Why the module-level function or class holding ``node`` is dead
        code, or None: its name appears nowhere else in the file, it is not
        decorated (a decorator may register it), and either it is a
        program's function (the file has a ``__main__`` block) or nothing
        else in the project names it, though it imports the module (:meth:`_unused`). Not in a file
        that hands its module to a CLI maker (``fire.Fire()`` exposes every
        function). (A module's private ``_helper`` that its own file never
        calls is, more likely than dead, imported by a sibling module: the
        project's text says which.)"""
        func = self._outermost_definition(node)
        if not isinstance(func, (cst.FunctionDef, cst.ClassDef)) or func.decorators:
            return None
        name = func.name.value
        if name.startswith(("test", "__")) or "Fire(" in self.source:
            return None
        if len(re.findall(rf"(?<![\w.]){re.escape(name)}\b", self.source)) > 1:
            return None
        if self.main_block and isinstance(func, cst.FunctionDef):
            return f"in `{name}`, which nothing calls: dead code unless another module imports it"
        if self._unused(name):
            return (f"in `{name}`, which nothing else in this project names, though other modules import its "
                    f"module: dead code unless a user imports it by hand")
        return None

    def _unused(self, name: str) -> bool:
        """A module-level definition of an application (no installable
        library) whose module other files of the project import, but which
        no other file mentions, nor its documentation or launch scripts
        (:meth:`nanlint.analysis.project.ProjectFile.unused_definition`).
        Not for the files a framework reads by convention (``hubconf.py``'s
        entry points, ``conftest.py``), nor where the file looks names up by
        string (``globals()``, ``sys.modules[__name__]``)."""
        if self.project is None or self.test_code or os.path.basename(self.path) in _CONVENTIONAL_FILES:
            return False
        if "globals()" in self.source or "sys.modules" in self.source:
            return False
        return self.project.unused_definition(name)

    @property
    def facts(self):
        """The shared analysis of this file (:class:`nanlint.analysis.Facts`),
        built on first use: files no rule asks about never pay for it."""
        if self._facts is None:
            from .analysis import Facts

            self._facts = Facts(self)
        return self._facts

    # -- names ------------------------------------------------------------
    def resolve(self, node: cst.BaseExpression) -> Optional[str]:
        """``torch.exp`` for ``T.exp`` after ``import torch as T``; None when the
        head of the chain is not an imported name."""
        return self.names.resolve(node)

    def callee(self, call: cst.Call) -> Tuple[Optional[str], Optional[str]]:
        """(qualified name, method name) of a call.

        ``torch.exp(x)`` -> ("torch.exp", None); ``x.exp()`` -> (None, "exp") when
        ``x`` is not an imported name; ``exp(x)`` after ``from torch import exp``
        -> ("torch.exp", None); an unknown plain function -> (None, None).
        """
        func = call.func
        qualified = self.names.resolve(func)
        if qualified is not None:
            return qualified, None
        if isinstance(func, cst.Attribute):
            return None, func.attr.value
        return None, None

    def torch_name(self) -> str:
        """The local name to write ``torch`` as in new code (``T`` after
        ``import torch as T``); list ``"torch"`` in the fix's imports."""
        return self.names.alias_for("torch") or "torch"

    def module_name(self, module: str) -> str:
        return self.names.alias_for(module) or module

    def code(self, node: cst.CSTNode) -> str:
        """The source text of a node, as written."""
        return self._text(node)

    @property
    def dtype(self) -> DtypeFacts:
        """The most fragile target dtype (the first one configured)."""
        return self.dtypes[0]


#: files a framework reads by convention: their definitions are entry points
_CONVENTIONAL_FILES = frozenset({"hubconf.py", "conftest.py", "setup.py", "__main__.py"})

_JAX_IMPORT = re.compile(r"^[ \t]*(?:import|from)[ \t]+(?:jax|flax)\b", re.MULTILINE)
#: ``import torch``, ``from torch.nn import ...``: the module named
_TORCH_IMPORT = re.compile(r"^[ \t]*(?:import|from)[ \t]+(torch(?:\.[\w.]+)?)", re.MULTILINE)


def _relative_parts(path: str, project) -> List[str]:
    if project is not None:
        return parts_below(project.path, project.roots)  # the package root holds it, at least
    rel = os.path.basename(path) if os.path.isabs(path) else os.path.normpath(path)
    return rel.replace(os.sep, "/").split("/")


#: text that shows a program may run in reduced precision
_LOW_PRECISION_TEXT = re.compile(
    r"half|float16|fp16|bfloat16|bf16|autocast|GradScaler|\bamp\b|_amp\b|\bamp_|precision\s*=|mixed_precision"
    r"|(?-i:\bAccelerator\b)|deepspeed"  # accelerate's Accelerator (mixed precision), not torch.accelerator
    r"|torch_dtype",
    re.IGNORECASE,
)


def has_main_block(module: cst.Module, source: str) -> bool:
    """The module has a top-level ``if __name__ == "__main__":`` block: it is
    run as a program."""
    return "__main__" in source and any(
        isinstance(stmt, cst.If) and "__main__" in module.code_for_node(stmt.test) for stmt in module.body)


def _is_float32_script(module: cst.Module, source: str) -> bool:
    if ".backward(" not in source or _LOW_PRECISION_TEXT.search(source):
        return False  # a model file with a demo block is not a training program
    return any(isinstance(stmt, (cst.For, cst.While)) for stmt in module.body) or has_main_block(module, source)


class Rule:
    """Base class of every rule. See the module docstring."""

    #: "NL001"
    code: ClassVar[str] = ""
    #: "tiny-epsilon"
    name: ClassVar[str] = ""
    #: one line, shown by ``nanlint rule --all``
    summary: ClassVar[str] = ""
    #: in the default selection?
    default_enabled: ClassVar[bool] = True
    #: the hazard exists only in float16 (a literal that rounds to 0, an exp
    #: past 65504): the rule is off unless float16 is a target dtype, and a
    #: script that runs in float32 gets it at low confidence
    float16_only: ClassVar[bool] = False
    #: the most permissive applicability of the rule's fixes: "safe", "unsafe" or None
    fix_applicability: ClassVar[Optional[str]] = None
    #: cheap text triggers (substrings or compiled regular expressions): a file
    #: matching none of them cannot produce a finding and is not parsed
    triggers: ClassVar[Tuple[Union[str, "re.Pattern[str]"], ...]] = ()
    #: the rule follows values defined in other modules of the project (an
    #: imported constant): it also runs on a file when a project module the
    #: file imports matches its triggers
    cross_module: ClassVar[bool] = False
    #: per-rule options (``[tool.nanlint.NL001] threshold = 1e-5``) and their defaults
    options: ClassVar[Dict[str, Any]] = {}
    #: executable documentation
    valid: ClassVar[Sequence[Valid]] = ()
    invalid: ClassVar[Sequence[Invalid]] = ()

    def __init__(self, ctx: Context, options: Optional[Dict[str, Any]] = None) -> None:
        self.ctx = ctx
        self.opts: Dict[str, Any] = dict(self.options)
        if options:
            self.opts.update(options)

    def report(
        self, node: cst.CSTNode, message: str, fix: Optional[FixSpec] = None, confidence: str = HIGH,
        autocast_float32: Optional[str] = None, needs_half: Optional[bool] = None,
    ) -> None:
        """Record a finding. ``autocast_float32``: the op, named so in the
        message, that CUDA/MPS autocast computes in float32 (``exp``,
        ``softmax``): the hazard then needs a model run in pure half, so a
        high finding is medium in a project that casts nothing to half
        (:meth:`nanlint.analysis.project.ProjectFile.casts_to_half`).
        ``needs_half``: the hazard exists only in float16/bfloat16 (default:
        the rule is ``float16_only``); a high finding is then medium in a
        project where nothing runs in reduced precision, autocast included,
        or where the programs that run this file do not
        (:meth:`nanlint.analysis.project.ProjectFile.reduced_precision`)."""
        if confidence not in CONFIDENCES:
            raise ValueError(f"confidence must be one of {CONFIDENCES}")
        lowered = False
        if confidence == HIGH and autocast_float32 and self.ctx.project is not None \
                and self.ctx.project.casts_to_half() is False:
            lowered = True
            confidence = MEDIUM
            message += (f" (CUDA autocast computes `{autocast_float32}` in float32, and nothing in this project "
                        f"casts a model to half: only a model run in pure {self.ctx.dtype.name} reaches this)")
        if needs_half is None:
            needs_half = self.float16_only
        # a float16-only hazard where nothing runs in reduced precision needs a run the project
        # never makes: one level less sure (high -> medium, an edge case's medium -> low)
        lower = {HIGH: MEDIUM, MEDIUM: LOW}
        reduced = self.ctx.project.reduced_precision() if (
            confidence in lower and needs_half and not lowered and self.ctx.project is not None) else None
        if reduced == "no: project":
            lowered, confidence = True, lower[confidence]
            message += (" (nothing in this project runs in reduced precision: no half cast, autocast or "
                        "mixed-precision setting in its code or configuration)")
        elif reduced == "no: programs":
            lowered, confidence = True, lower[confidence]
            message += (" (the programs that run this code, and what they import, run nothing in reduced "
                        "precision: no half cast, autocast or mixed-precision setting)")
        if not lowered and confidence in lower and needs_half \
                and self.ctx.input_pipeline and not runs_pure_half(self.ctx.source):
            confidence = lower[confidence]
            message += (" (in data-pipeline code, whose tensors come from the data in float32: a model's "
                        "half cast or autocast does not reach them)")
        if "numel" in self.ctx.source and self.ctx.facts.only_for_empty(node):
            return  # `if x.numel() == 0:` -- no element to overflow
        if confidence != LOW and self.ctx.test_code:
            # whether a test's own inputs (synthetic, often float64, a few fixed
            # steps) reach the hazard is nothing the analysis establishes
            confidence = LOW
            message += " (in test code, which chooses its own inputs)"
        if confidence != LOW:
            tested = self.ctx.only_tested_function(node)
            if tested is not None:
                confidence = LOW
                message += f" (in `{tested}`, which only tests run: a reference implementation or a test helper)"
        if confidence != LOW:
            dead = self.ctx.uncalled_function(node)
            if dead is not None:
                confidence = LOW
                message += f" ({dead})"
        if confidence != LOW and self.ctx.project is not None:
            untaken = self.ctx.facts.untaken_branch(node)
            if untaken is not None:
                confidence = LOW
                message += f" (in a branch that no call takes: {untaken})"
        if confidence != LOW and "torch" in self.ctx.source:
            feature = self.ctx.facts.torch_fallback(node)
            if feature is not None:
                confidence = LOW
                message += f" (in a fallback for a torch without `{feature}`, which current torch has)"
        if confidence != LOW and self.ctx.project is not None and self.ctx.project.never_imported():
            confidence = LOW
            message += (" (in a module that nothing in this project imports or names: dead code unless a "
                        "user imports it by hand)")
        if confidence != LOW and self.ctx.jax_code:
            confidence = LOW
            message += " (this file computes with JAX: it imports jax or flax, and from torch only utilities)"
        if confidence != LOW and self.float16_only and self.ctx.float32_script:
            confidence = LOW
            message += " (this script shows no float16: nothing in it casts to half or enables autocast)"
        self.ctx.reports.append(Report(self, node, message, fix, confidence))

    @classmethod
    def documentation(cls) -> str:
        return inspect.cleandoc(cls.__doc__ or "")

    @classmethod
    def active(cls, dtypes: Sequence[DtypeFacts]) -> bool:
        """Whether the rule can report anything for these target dtypes."""
        return not cls.float16_only or targets_float16(dtypes)
