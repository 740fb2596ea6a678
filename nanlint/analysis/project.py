"""Facts that cross module boundaries: what the other modules of the checked
project define, as far as a rule needs it.

A module's *summary* is computed with Python's ``ast`` (about ten times
cheaper than libcst; no other module is ever parsed with libcst) and holds:

- numeric module constants (``EPS = 1e-8``, ``NEG_INF = -INF``,
  ``float("-inf")``, ``10 ** -8``);
- per function (``helper`` and ``Class.method``): its numeric parameter
  defaults and whether it returns a probability (softmax/sigmoid),
  log-probabilities (log_softmax/logsigmoid) or an unbounded ``exp``, clips
  gradients, initialises modules (``nn.init.*``) or fills a mask with -inf;
- per class: numeric field defaults (dataclass / config-class fields
  ``eps: float = 1e-8``, class attributes, ``self.eps = 1e-8`` or
  ``self.eps = eps`` with a numeric default in ``__init__``).

Summaries are cached per process and keyed by the module's content hash.

Imports are read with a regular expression over the text (no parse), so the
runner can compute a file's project dependencies -- the modules its findings
may draw a summary from -- before deciding whether its cached findings still
hold. ``from .consts import EPS``, ``from pkg.utils import helper`` and
``import pkg.mod as m`` resolve to files below the file's package root (the
nearest directory above it without ``__init__.py``) or the project root.
Only direct imports are followed (a re-export through an ``__init__`` is
followed one step, and then it is a direct import of that ``__init__``).
"""

from __future__ import annotations

import ast
import hashlib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, FrozenSet, Iterator, List, Optional, Sequence, Set, Tuple

from ..files import ReadError, TooLarge, read_bytes

PROBABILITY = "probability"
LOG_PROBABILITY = "log_probability"
EXP = "exp"

#: methods that, by convention, initialise a module's parameters
#: (``init_weights``, ``reset_parameters``, ``_init_weights``, ``init_states``,
#: ``reset_lora_parameters``, ``_setup_init``, ``custom_init``)
INIT_HOOK = re.compile(
    r"^_*(?:(?:re_?)?init|reset|initiali[sz]e|weights?_init|param\w*_init|post_init)"
    r"|_init(?:ial\w*)?(?:_|$)",
    re.IGNORECASE,
)
#: in-place methods that set a tensor's values
_FILLS = frozenset({"normal_", "uniform_", "zero_", "fill_", "copy_", "trunc_normal_", "xavier_uniform_",
                    "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "ones_", "zeros_", "orthogonal_"})
#: what an init hook reaches every parameter through
_SWEEPS = frozenset({"parameters", "named_parameters", "modules", "named_modules", "children",
                     "named_children", "apply", "_parameters"})

# -- imports, read from the text --------------------------------------------------

_FROM = re.compile(r"^[ \t]*from[ \t]+(\.*)([\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#;]*)", re.MULTILINE)
_IMPORT = re.compile(r"^[ \t]*import[ \t]+([\w., \t]+)", re.MULTILINE)
_ALIAS = re.compile(r"^([\w.]+)(?:\s+as\s+(\w+))?$")
_STAR = re.compile(r"^[ \t]*from[ \t]+(\.*)([\w.]*)[ \t]+import[ \t]+\*", re.MULTILINE)


@dataclass(frozen=True)
class Imported:
    """A name bound by an import: ``local`` stands for ``symbol`` of module
    ``module`` (``symbol`` is None for ``import a.b as m``)."""

    local: str
    module: str
    symbol: Optional[str]


def read_imports(text: str, package: Sequence[str]) -> List[Imported]:
    """The imports of a source text, relative ones made absolute against the
    importing module's package (``package``: its dotted parts)."""
    out: List[Imported] = []
    froms, plains = _import_lines(text)
    for m in froms:
        dots, names = m.group(1), m.group(3)
        module = _absolute(dots, m.group(2), package)
        if not module:
            continue
        for part in names.strip("() \t\r\n\\").replace("\n", ",").split(","):
            alias = _ALIAS.match(part.strip())
            if alias and alias.group(1) != "*":
                out.append(Imported(alias.group(2) or alias.group(1), module, alias.group(1)))
    for m in plains:
        for part in m.group(1).split(","):
            alias = _ALIAS.match(part.strip())
            if alias is None:
                continue
            name, asname = alias.group(1), alias.group(2)
            if asname:
                out.append(Imported(asname, name, None))
            else:
                head = name.split(".")[0]
                out.append(Imported(head, head, None))
    return out


def _absolute(dots: str, module: str, package: Sequence[str]) -> str:
    """The absolute name of ``from <dots><module> import ...`` in a module of
    package ``package`` (its dotted parts); "" when the dots climb above it."""
    if dots:
        up = len(dots) - 1
        if up > len(package):
            return ""
        base = list(package[: len(package) - up]) if up else list(package)
        module = ".".join(base + ([module] if module else []))
    return module


def _import_lines(text: str) -> Tuple[List["re.Match[str]"], List["re.Match[str]"]]:
    """The matches of ``_FROM`` and of ``_IMPORT`` in ``text``, as their
    ``finditer`` gives them. Both start a line holding the word ``import``, so
    only those lines are tried: scanning for the word is a C loop, while the
    patterns' leading ``^[ \\t]*`` makes ``finditer`` try every position."""
    froms: List["re.Match[str]"] = []
    plains: List["re.Match[str]"] = []
    from_end = 0  # a from-import in parentheses spans lines: none starts inside it
    last = -1
    at = text.find("import")
    while at >= 0:
        start = text.rfind("\n", 0, at) + 1
        if start != last:
            last = start
            if start >= from_end:
                m = _FROM.match(text, start)
                if m is not None:
                    froms.append(m)
                    from_end = m.end()
            m = _IMPORT.match(text, start)
            if m is not None:
                plains.append(m)
        at = text.find("import", at + 6)
    return froms, plains


# -- where modules live -----------------------------------------------------------


def package_root(path: str) -> str:
    """The nearest directory above ``path`` that is not a package."""
    folder = os.path.dirname(os.path.abspath(path))
    while os.path.isfile(os.path.join(folder, "__init__.py")):
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return folder


def module_parts(path: str, root: str) -> List[str]:
    rel = os.path.relpath(os.path.abspath(path), root)
    parts = rel[:-3].split(os.sep) if rel.endswith(".py") else rel.split(os.sep)
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return parts


_FOUND: Dict[Tuple[str, str], Optional[str]] = {}


def find_module(module: str, roots: Sequence[str]) -> Optional[str]:
    """The file of a dotted module below one of ``roots``, or None."""
    for root in roots:
        key = (root, module)
        if key not in _FOUND:
            base = os.path.join(root, *module.split("."))
            found = None
            for candidate in (base + ".py", os.path.join(base, "__init__.py")):
                if os.path.isfile(candidate):
                    found = candidate
                    break
            _FOUND[key] = found
        if _FOUND[key] is not None:
            return _FOUND[key]
    return None


_IMPORTS: Dict[str, Dict[str, Imported]] = {}


#: project files read for facts (imports, callers, the use of weights) are
#: read up to this size; a larger one, or one that is not a regular file (a
#: FIFO, a symlink to ``/dev/zero``), is read as empty
_FACT_FILE_LIMIT = 4 * 1_048_576


def _read_bytes(path: str) -> Optional[bytes]:
    try:
        return read_bytes(Path(path), _FACT_FILE_LIMIT)
    except (ReadError, TooLarge):
        return None


def _read_text(path: str) -> str:
    """A project module's text ("" when it cannot be read: it then defines nothing)."""
    data = _read_bytes(path)
    return data.decode("utf-8", "replace") if data is not None else ""


_STARS: Dict[str, List[str]] = {}


def module_imports(path: str) -> Dict[str, Imported]:
    """The names a project module imports (read once per process, with its
    star imports: :func:`star_imports`)."""
    if path not in _IMPORTS:
        text = _read_text(path)
        parts = module_parts(path, package_root(path))
        package = parts if path.endswith("__init__.py") else parts[:-1]
        table: Dict[str, Imported] = {}
        for imp in read_imports(text, package):
            table.setdefault(imp.local, imp)
        _IMPORTS[path] = table
        _STARS[path] = _star_modules_in(text, package)
    return _IMPORTS[path]


def _star_modules_in(text: str, package: Sequence[str]) -> List[str]:
    """The modules a source text imports everything from, made absolute."""
    stars = (_absolute(dots, module, package) for dots, module in _STAR.findall(text)) if "*" in text else ()
    return [m for m in stars if m]


def star_imports(path: str) -> List[str]:
    """The modules a project module imports everything from (``from .ops import *``)."""
    module_imports(path)
    return _STARS[path]


_HASHES: Dict[str, Optional[str]] = {}
#: (module path, rule code) -> whether the module matches the rule's triggers
_TRIGGERED: Dict[Tuple[str, str], bool] = {}


def content_hash(path: str) -> Optional[str]:
    """sha256 of a module's bytes (read once per process: a run does not
    expect the files it checks to change under it)."""
    if path not in _HASHES:
        _note_hash(path, _read_bytes(path))
    return _HASHES[path]


def _note_hash(path: str, data: Optional[bytes]) -> None:
    """Remember the content hash of bytes just read from ``path`` (once)."""
    if path not in _HASHES:
        _HASHES[path] = hashlib.sha256(data).hexdigest() if data is not None else None


def parts_below(path: str, roots: Sequence[str]) -> List[str]:
    """A file's path parts below the outermost of ``roots`` that holds it
    (the project root before the package root); its base name when none does."""
    for root in reversed(roots):
        rel = os.path.relpath(path, root)
        if not rel.startswith(os.pardir):
            return rel.replace(os.sep, "/").split("/")
    return [os.path.basename(path)]


class ProjectFile:
    """One checked file's view of its project: its imports resolved to files."""

    def __init__(self, path: str, text: str, project_root: Optional[str] = None) -> None:
        self.path = os.path.abspath(path)
        root = package_root(self.path)
        self.roots = [root] + ([os.path.abspath(project_root)] if project_root and os.path.abspath(project_root) != root else [])
        parts = module_parts(self.path, root)
        package = parts if self.path.endswith("__init__.py") else parts[:-1]
        self.imports: Dict[str, Imported] = {}
        #: the checked text, which may not be on disk (stdin, an unsaved
        #: buffer): read for the half-cast fact (:meth:`casts_to_half`)
        self._text = text
        for imp in read_imports(text, package):
            self.imports.setdefault(imp.local, imp)
        self._dependencies: Optional[List[Tuple[str, str]]] = None
        self._package = package
        self._stars: Optional[List[str]] = None
        #: modules beyond the direct dependencies that linting read a fact
        #: from (a base class two imports away): path -> content hash
        self.consulted: Dict[str, str] = {}

    def dotted(self, local: str) -> str:
        """What an imported name stands for, spelled ``pkg.mod.NAME``."""
        imp = self.imports[local]
        return f"{imp.module}.{imp.symbol}" if imp.symbol is not None else imp.module

    def module_file(self, module: str) -> Optional[str]:
        found = find_module(module, self.roots)
        return None if found == self.path else found

    def target(self, local: str) -> Optional[Tuple[str, Optional[str]]]:
        """(file, symbol) a local imported name stands for: ``symbol`` is None
        when the name is a module (``import pkg.mod as m``, ``from pkg import mod``)."""
        imp = self.imports.get(local)
        if imp is None:
            return None
        if imp.symbol is not None:
            sub = self.module_file(f"{imp.module}.{imp.symbol}")
            if sub is not None:
                return sub, None
            owner = self.module_file(imp.module)
            return (owner, imp.symbol) if owner is not None else None
        owner = self.module_file(imp.module)
        return (owner, None) if owner is not None else None

    def imports_trigger(self, rule, may_trigger) -> bool:
        """Whether a project module this file imports matches the rule's text
        triggers (so an imported value may bring the rule a finding here)."""
        for path, _ in self.dependencies():
            key = (path, rule.code)
            if key not in _TRIGGERED:
                _TRIGGERED[key] = may_trigger(rule, _read_text(path))
            if _TRIGGERED[key]:
                return True
        return False

    def dependencies(self) -> List[Tuple[str, str]]:
        """(path, content hash) of the project modules this file imports
        directly -- and of the module a name re-exported by one of them comes
        from (``from .consts import EPS`` in an ``__init__``) -- sorted: what
        its cached findings depend on besides itself."""
        if self._dependencies is None:
            paths = set()
            for imp in self.imports.values():
                if imp.symbol is not None:
                    sub = self.module_file(f"{imp.module}.{imp.symbol}")
                    if sub is not None:
                        paths.add(sub)
                        continue
                owner = self.module_file(imp.module)
                if owner is None:
                    continue
                paths.add(owner)
                again = module_imports(owner).get(imp.symbol or "")
                if again is not None and again.symbol is not None:
                    origin = find_module(again.module, [package_root(owner)])
                    if origin is not None and origin != self.path:
                        paths.add(origin)
            paths.update(self.star_modules())
            self._dependencies = sorted((p, content_hash(p) or "") for p in paths)
        return self._dependencies

    def star_modules(self) -> List[str]:
        """The project modules this file takes every name from (``from
        nerf.utils import *``), and those they take every name from in turn."""
        if self._stars is None:
            self._stars = []
            root = project_root(self.path, self.roots[-1])
            todo = [(self.path, self._text, 0)]
            while todo:
                path, text, depth = todo.pop()
                stars = star_imports(path) if text is None else _star_modules_in(text, self._package)
                for module in stars:
                    found = find_module(module, _import_roots(path, root) if root is not None else self.roots)
                    if found is not None and found != self.path and found not in self._stars and depth < 3:
                        self._stars.append(found)
                        todo.append((found, None, depth + 1))
        return self._stars

    def star_bindings(self) -> Dict[str, str]:
        """What the names a star import brings from the project stand for,
        where they are imports of other libraries (``import
        torch.nn.functional as F`` in the star-imported module): local name
        -> qualified name, as :class:`nanlint.resolve.Names` spells it."""
        out: Dict[str, str] = {}
        for path in self.star_modules():
            for imp in module_imports(path).values():
                if imp.local in out or imp.local.startswith("_") or find_module(imp.module, [package_root(path)]):
                    continue  # a project module's own names are read by the project analysis
                out[imp.local] = imp.module if imp.symbol is None else f"{imp.module}.{imp.symbol}"
        return out

    def bind_star_names(self, names) -> None:
        """Add to a file's import table (:class:`nanlint.resolve.Names`) the
        names its star imports of project modules bring (see
        :meth:`star_bindings`); its own imports win."""
        if "import" in self._text and "*" in self._text:
            for local, qualified in self.star_bindings().items():  # `from utils import *` brings its `F`
                names.bindings.setdefault(local, qualified)

    def consult(self, path: str) -> None:
        """Note that a fact was read from ``path`` (see :meth:`requires`)."""
        if path != self.path:
            self.consulted[path] = content_hash(path) or ""

    def requires(self) -> List[Tuple[str, str]]:
        """(path, content hash) of the modules consulted while linting that
        the cache key does not cover: a cached result holds only while they
        are unchanged."""
        direct = {p for p, _ in self.dependencies()}
        return sorted((p, h) for p, h in self.consulted.items() if p not in direct)

    def inference_release(self) -> bool:
        """Whether this file's project loads trained weights and never trains
        (see :func:`use_of_weights`); False when its extent is unknown."""
        root = project_root(self.path, self.roots[-1])
        return root is not None and self._fact("weights", root) == INFERENCE

    def casts_to_half(self) -> Optional[bool]:
        """Whether this file's project runs something in pure float16 or
        bfloat16 anywhere (see :func:`casts_to_half`); None when its extent
        is unknown."""
        if runs_pure_half(self._text):
            return True
        root = project_root(self.path, self.roots[-1])
        return None if root is None else self._fact("half", root) == "yes"

    def reduced_precision(self) -> Optional[str]:
        """Whether this file runs in float16 or bfloat16, under autocast
        included: ``"yes"``; ``"no: project"`` when nothing in its project
        does (see :func:`uses_reduced_precision`); ``"no: programs"`` when
        something does, but not the programs that run this file (see
        :func:`programs_use_reduced_precision`); None when the project's
        extent is unknown."""
        if runs_reduced_precision(self._text):
            return "yes"
        root = project_root(self.path, self.roots[-1])
        if root is None:
            return None
        if self._fact("reduced", root) == "no":
            return "no: project"
        if self._fact("programs-reduced", f"{os.path.abspath(self.path)}\n{root}") == "no":
            return "no: programs"
        return "yes"

    def never_imported(self) -> bool:
        """Whether nothing in this file's project imports or names its module
        (see :func:`never_imported`); False when its extent is unknown."""
        root = project_root(self.path, self.roots[-1])
        if root is None or not _maybe_dead(self.path, root, self._text):
            return False  # from this file alone: its cached result rests on nothing else
        return self._fact("unimported", f"{os.path.abspath(self.path)}\n{root}") == "yes"

    def named_elsewhere(self, name: str) -> bool:
        """Whether another file of this file's project names ``name`` (see
        :func:`named_elsewhere`), or the project is an installable library
        (whose users may call anything) or of unknown extent."""
        if self.library():
            return True
        root = project_root(self.path, self.roots[-1])
        return self._fact("named", f"{name}:{os.path.abspath(self.path)}|{root}") == "yes"

    def unused_definition(self, name: str) -> bool:
        """Whether the project imports this file's module but mentions its
        definition ``name`` nowhere else (see :func:`unused_definition`);
        False in an installable library (whose users may import anything)
        or a project of unknown extent."""
        if self.library():
            return False
        root = project_root(self.path, self.roots[-1])
        return self._fact("unused", f"{name}:{os.path.abspath(self.path)}|{root}") == "yes"

    def library(self) -> bool:
        """Whether this file belongs to an installable library (see
        :func:`installable`), whose users call its public functions with
        arguments of their own; True when the project's extent is unknown."""
        root = project_root(self.path, self.roots[-1])
        return root is None or installable(os.path.dirname(self.path), root)

    def generically_initialised(self, name: str) -> bool:
        """Whether a function of the project initialises a parameter called
        ``name`` on whatever module it walks (see :func:`generically_initialised`)."""
        return name in self._fact("generic-init", code_scope(self.path)).split(",")

    def swept_parameters(self) -> str:
        """Where a module of the project that imports this one initialises
        every parameter of a module it holds, one by one (see
        :func:`swept_parameters`), or ""."""
        return self._fact("sweeps", os.path.abspath(self.path))

    def patched_in(self, cls: str) -> bool:
        """Whether a class of this file is patched over another library's
        class (see :func:`patched_in`)."""
        return self._fact("patched", f"{cls}:{self.path}") == "yes"

    def callers(self, name: str) -> Optional[List[Tuple[str, str, bool, bool]]]:
        """The other files of this file's project that may call its
        module-level function ``name`` (see :func:`callers`), noted for the
        cache with their content hashes; None when they cannot be listed."""
        root = project_root(self.path, self.roots[-1]) or code_scope(self.path)
        value = self._fact("callers", f"{name}:{self.path}|{root}")
        if value == "?":
            return None
        out = []
        for entry in filter(None, value.split(";")):
            other, local, via, test, _ = entry.split("|")
            if test != "w":  # only watched (see ``_callers_fact``)
                out.append((other, local, via == "1", test == "1"))
        return out

    def _fact(self, kind: str, subject: str) -> str:
        """A project-wide fact's value, noted for the cache (see :func:`unchanged`)."""
        value = _FACTS[kind](subject)
        self.consulted[f"{kind}:{subject}"] = value
        return value


#: project-wide facts a cached result may rest on: kind -> subject -> value
_FACTS = {
    "weights": lambda root: use_of_weights(root),
    "half": lambda root: "yes" if casts_to_half(root) else "no",
    "reduced": lambda root: "yes" if uses_reduced_precision(root) else "no",
    "unimported": lambda subject: "yes" if never_imported(*subject.split("\n")) else "no",
    "programs-reduced": lambda subject: {True: "yes", False: "no", None: "unknown"}[
        programs_use_reduced_precision(*subject.split("\n"))],
    "named": lambda subject: "yes" if named_elsewhere(subject.partition(":")[0], *subject.partition(":")[2].rsplit("|", 1)) else "no",
    "unused": lambda subject: "yes" if unused_definition(
        subject.partition(":")[0], *subject.partition(":")[2].rsplit("|", 1)) else "no",
    "generic-init": lambda scope: ",".join(sorted(generically_initialised(scope))),
    "sweeps": lambda path: swept_parameters(path),
    "patched": lambda subject: "yes" if patched_in(subject.partition(":")[2], subject.partition(":")[0]) else "no",
    "callers": lambda subject: _callers_fact(subject),
}


def unchanged(requires: Sequence[Sequence[str]]) -> bool:
    """Whether every (path, content hash) still matches the file on disk,
    and every project fact (``weights:<root>``, ``patched:<class>:<path>``,
    ``generic-init:<scope>``) still has its value."""
    for key, value in requires:
        kind, _, subject = key.partition(":")
        if kind in _FACTS:
            if _FACTS[kind](subject) != value:
                return False
        elif content_hash(key) != value:
            return False
    return True


# -- the project as a whole ----------------------------------------------------------

TRAINS, INFERENCE, NEITHER = "trains", "inference", "neither"
#: what a project that trains (or fine-tunes) a model writes somewhere: a
#: backward pass, an optimizer, a trainer. Gradients taken only with respect
#: to an input (``torch.autograd.grad(loss, x)``, guidance) do not count.
_TRAINS = re.compile(
    r"\.backward\(|\btorch\.optim\b|from torch import optim|\boptim\.[A-Z]\w*\(|\.zero_grad\(|training_step"
    r"|\bTrainer\b|deepspeed|GradScaler|\bOptimizer\b|\bfit\("
)
#: what a project that runs trained weights writes: it loads them
_LOADS = re.compile(r"load_state_dict\(|torch\.load\(|\bload_checkpoint\(|from_pretrained\(|safetensors")
_PROJECT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg")
_NOT_SOURCE = frozenset({"__pycache__", "node_modules", "site-packages"})
#: past this many files without a sign of training, a project is assumed to train
_SCAN_LIMIT = 20000
_WEIGHTS_USE: Dict[str, str] = {}
_PATCH_SITES: Dict[str, Dict[str, List[str]]] = {}
_SOURCES: Dict[Tuple[str, Tuple[str, ...]], List[str]] = {}
_GENERIC: Dict[str, FrozenSet[str]] = {}
_GENERIC_TEXT = re.compile(r"""(?:get|has)attr\(\s*\w+\s*,\s*["'](?:weight|bias)["']""")


def _source_files(root: str, suffixes: Tuple[str, ...] = (".py",)) -> List[str]:
    """The files below ``root`` ending in ``suffixes`` (hidden folders,
    caches and virtualenvs left out), listed once per process; past
    ``_SCAN_LIMIT`` files the list stops, one file past the limit."""
    key = (root, suffixes)
    if key not in _SOURCES:
        out: List[str] = []
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _NOT_SOURCE
                             and not os.path.isfile(os.path.join(folder, d, "pyvenv.cfg")))
            out.extend(os.path.join(folder, name) for name in sorted(files) if name.endswith(suffixes))
            if len(out) > _SCAN_LIMIT:
                break
        _SOURCES[key] = out[:_SCAN_LIMIT + 1]
    return _SOURCES[key]


def code_scope(path: str) -> str:
    """Where the code that builds, patches or initialises the classes of a
    module lives: its top-level package (``src/liger_kernel``, ``torch``),
    or the folder of a module outside any package. Not the package root:
    for an installed package that is all of ``site-packages``."""
    root = package_root(path)
    parts = module_parts(path, root)
    if len(parts) <= 1:
        return os.path.dirname(os.path.abspath(path))
    return os.path.join(root, parts[0])


#: ``modeling_mixtral.MixtralExperts = LigerExperts`` (a class assigned over an
#: attribute), ``_patch_swiglu_module(layer.mlp.experts, LigerExperts)``
_PATCH_ASSIGN = re.compile(r"=[ \t]*([A-Z]\w*)[ \t]*(?:#[^\n]*)?$", re.MULTILINE)
#: what stands left of that ``=``: an attribute (``modeling_mixtral.MixtralExperts``)
_ATTRIBUTE_TARGET = re.compile(r"[\w.\[\]()'\"]*[\w\])]\.\w+")
_PATCH_CALL = re.compile(r"patch\w*\(([^()\n]*)\)")
_CLASS_NAME = re.compile(r"\b[A-Z]\w*")


def _patch_sites(scope: str) -> Dict[str, List[str]]:
    """Class name -> the files below ``scope`` that patch a class of that
    name in, read once per process."""
    if scope not in _PATCH_SITES:
        sites: Dict[str, List[str]] = {}
        for path in _source_files(scope)[:_SCAN_LIMIT]:
            text = _read_text(path)
            names = []
            for m in _PATCH_ASSIGN.finditer(text):
                target = text[text.rfind("\n", 0, m.start()) + 1:m.start()].strip()
                if _ATTRIBUTE_TARGET.fullmatch(target):
                    names.append(m.group(1))
            if "patch" in text:
                names += [n for m in _PATCH_CALL.finditer(text) for n in _CLASS_NAME.findall(m.group(1))]
            for name in names:
                if path not in sites.setdefault(name, []):
                    sites[name].append(path)
        _PATCH_SITES[scope] = sites
    return _PATCH_SITES[scope]


def patched_in(path: str, cls: str) -> bool:
    """Whether a module of the project (below the top-level package of
    ``path``) patches class ``cls`` of ``path`` over another library's class
    (``modeling_mixtral.MixtralExperts = LigerExperts``) or hands it to a
    patching function (``_patch_swiglu_module(layer.mlp.experts, LigerExperts)``):
    the patched library then builds the model that holds it, and initialises
    or loads its weights."""
    for other in _patch_sites(code_scope(path)).get(cls, []):
        if other == path:
            return True
        imp = module_imports(other).get(cls)
        if imp is not None and imp.symbol == cls and find_module(imp.module, [package_root(other)]) == path:
            return True
    return False


def generically_initialised(root: str) -> FrozenSet[str]:
    """The parameter names (``weight``, ``bias``) that a function of the
    project below ``root`` initialises on every module it walks, whatever
    its class: a loop over ``model.modules()`` that reads
    ``getattr(m, "weight", None)`` (or tests ``hasattr(m, "weight")``) and
    runs an initialiser (``init_func(weight)``, ``nn.init.*``, ``bias.data.zero_()``)
    on it -- Open-Sora's ``init_modules``, whose catch-all branch covers
    custom norms; or a callback for ``model.apply(...)``, a function of one
    module that does the same (imaginaire's ``weights_init``:
    ``if hasattr(m, 'bias') and m.bias is not None: init.constant_(m.bias.data, 0)``
    for whatever module ``apply`` hands it)."""
    if root not in _GENERIC:
        names: Set[str] = set()
        for _, tree in _parsed_trees(root, lambda text: _GENERIC_TEXT.search(text) is not None):
            for node in ast.walk(tree):
                if isinstance(node, ast.For) and isinstance(node.iter, ast.Call) \
                        and _short(node.iter.func) in ("modules", "named_modules"):
                    names |= _initialised_by_name(node)
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _module_callback(node):
                    names |= _initialised_by_name(node)
        _GENERIC[root] = frozenset(names)
    return _GENERIC[root]


def _module_callback(func: ast.FunctionDef) -> bool:
    """A function of one module (``def init_func(m):``), the shape
    ``nn.Module.apply`` calls: what it does to ``m`` it does to every module
    of the model it is applied to."""
    params = [*func.args.posonlyargs, *func.args.args]
    return len(params) == 1 and params[0].arg not in ("self", "cls") and not func.args.kwonlyargs


#: a loop over some module's parameters (``for _, p in self.mlp.named_parameters():``) with
#: something like an initialiser in its next lines: most such loops (gradients, freezing, counts)
#: are not read at all
_SWEEP_TEXT = re.compile(
    r"\bfor\b[^\n]*\bin\s+[\w.\[\]()]+\.(?:named_)?parameters\(\)[^\n]*\n(?:[^\n]*\n){0,12}?"
    r"[^\n]*(?:init|normal_|uniform_|zero_|fill_|copy_|xavier|kaiming|orthogonal|ones_)"
)
_SWEEPS_FOUND: Dict[str, List[Tuple[str, int]]] = {}


def swept_parameters(path: str) -> str:
    """Where (``path:line``) a module of the project initialises every
    parameter of a module it holds, one by one, whatever the module's class
    -- a loop over ``X.parameters()`` / ``X.named_parameters()`` that runs an
    initialiser on each (``normal_(std=0.006)(param)``,
    ``nn.init.xavier_uniform_(p)``, ``p.data.zero_()``) -- in a module that
    reaches the module at ``path`` through at most four imports (the same
    file included): InternEvo's blocks initialise the experts and embeddings
    that other modules define. "" when none does. Test code
    (:func:`is_test_path`) does not count;
    a loop in a part of the project that never imports this module (another
    collection of a monorepo) says nothing about it."""
    root = code_scope(path)
    target = os.path.abspath(path)
    for site, line in _sweep_sites(root):
        if _imports_reach(site, target, 4):
            return f"{os.path.relpath(site, os.path.dirname(root))}:{line}"
    return ""


def _sweep_sites(root: str) -> List[Tuple[str, int]]:
    """Every (file, line) below ``root`` of a loop that initialises each
    parameter of a module (see :func:`swept_parameters`), listed once per
    process."""
    if root not in _SWEEPS_FOUND:
        found: List[Tuple[str, int]] = []
        wanted = lambda text: "parameters()" in text and _SWEEP_TEXT.search(text) is not None  # noqa: E731
        for path, loop in _loops_over(root, ("parameters", "named_parameters"), wanted, skip_tests=True):
            path = os.path.abspath(path)
            if (not found or found[-1][0] != path) and _fills_each(loop):
                found.append((path, loop.lineno))  # the first such loop of each file
        _SWEEPS_FOUND[root] = found
    return _SWEEPS_FOUND[root]


def _loops_over(root: str, methods: Sequence[str], wanted: Callable[[str], bool],
                skip_tests: bool = False) -> Iterator[Tuple[str, ast.For]]:
    """(file, loop) for every ``for ... in X.<method>()`` loop, ``method`` one
    of ``methods``, in the files below ``root`` whose text ``wanted`` accepts
    (test files left out with ``skip_tests``)."""
    for path, tree in _parsed_trees(root, wanted, skip_tests):
        for loop in ast.walk(tree):
            if isinstance(loop, ast.For) and isinstance(loop.iter, ast.Call) and _short(loop.iter.func) in methods:
                yield path, loop


def _parsed_trees(root: str, wanted: Callable[[str], bool], skip_tests: bool = False) -> Iterator[Tuple[str, ast.Module]]:
    """(file, Python's syntax tree) for the files below ``root`` whose text
    ``wanted`` accepts (test files left out with ``skip_tests``; files Python
    rejects left out)."""
    for path in _source_files(root)[:_SCAN_LIMIT]:
        if skip_tests and is_test_path(path, root):
            continue
        text = _read_text(path)
        if not wanted(text):
            continue
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        yield path, tree


#: past this many modules, a module's imports say nothing about one class (it imports half a library)
_REACH_LIMIT = 200


def _imports_reach(start: str, target: str, hops: int) -> bool:
    """Whether the module at ``start`` is ``target`` or imports it through at
    most ``hops`` project imports (``from pkg.moe import MoE`` reaches
    ``pkg/moe/__init__.py``, which may import the experts' module); False
    once more than ``_REACH_LIMIT`` modules are in reach (torch's own
    ``rnn.py`` reaches most of ``torch.nn``), which also bounds the cost."""
    seen = {start}
    frontier = [start]
    for _ in range(hops + 1):
        if target in frontier:
            return True
        if len(seen) > _REACH_LIMIT:
            return False
        following: List[str] = []
        for module in frontier:
            roots = [package_root(module)]
            for imp in module_imports(module).values():
                names = [imp.module] if imp.symbol is None else [imp.module, f"{imp.module}.{imp.symbol}"]
                for dotted in names:
                    found = find_module(dotted, roots)
                    if found is not None:
                        found = os.path.abspath(found)
                        if found not in seen:
                            seen.add(found)
                            following.append(found)
        frontier = following
    return False


def _fills_each(loop: ast.For) -> bool:
    """The loop runs an initialiser on its parameter variable: ``init(p)``,
    ``init_fn(std)(p.data)``, ``p.normal_()``, ``p.data.zero_()``."""
    target = loop.target.elts[-1] if isinstance(loop.target, ast.Tuple) and loop.target.elts else loop.target
    if not isinstance(target, ast.Name):
        return False
    var = target.id

    def is_var(node: ast.AST) -> bool:
        if isinstance(node, ast.Attribute) and node.attr == "data":
            node = node.value
        return isinstance(node, ast.Name) and node.id == var

    def initialiser(func: ast.AST) -> bool:
        if isinstance(func, ast.Call):  # normal_(std=0.006)(param): a factory's initialiser
            func = func.func
        short = _short(func)
        return _initialiser_name(short) or (
            short.endswith("_") and any(w in short for w in ("normal", "uniform", "orthogonal", "xavier", "kaiming")))

    for node in ast.walk(loop):
        if not isinstance(node, ast.Call):
            continue
        if any(is_var(a) for a in node.args) and initialiser(node.func):
            return True
        if isinstance(node.func, ast.Attribute) and is_var(node.func.value) and node.func.attr in _FILLS:
            return True
    return False


def _initialised_by_name(loop: ast.For) -> Set[str]:
    """``weight``/``bias`` when the loop reads them by name off the module it
    walks and initialises something (``nn.init.*``, an in-place fill, an
    ``init*`` function)."""
    read: Set[str] = set()
    initialises = False
    for node in ast.walk(loop):
        if not isinstance(node, ast.Call):
            continue
        short = _short(node.func)
        if short in ("getattr", "hasattr") and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) \
                and node.args[1].value in ("weight", "bias"):
            read.add(node.args[1].value)
        if ".init." in f".{_dotted(node.func)}" or _initialiser_name(short):
            initialises = True
    return read if initialises else set()


def _initialiser_name(short: str) -> bool:
    """A call named like an initialiser: an in-place fill (``normal_``,
    ``zero_``) or anything with ``init`` in its name but ``__init__``."""
    return short in _FILLS or ("init" in short.lower() and short != "__init__")


def project_root(path: str, run_root: Optional[str] = None) -> Optional[str]:
    """The directory of the project a file belongs to: the nearest one above
    it holding ``.git``, else the highest holding a ``pyproject.toml`` /
    ``setup.py`` / ``setup.cfg`` (not above ``run_root`` when the file is
    inside it); without either, ``run_root`` when the file is inside it
    (the checked tree), else None."""
    folder = os.path.dirname(os.path.abspath(path))
    limit = os.path.abspath(run_root) if run_root else None
    inside = limit is not None and (folder == limit or folder.startswith(limit.rstrip(os.sep) + os.sep))
    best = None
    while True:
        if os.path.exists(os.path.join(folder, ".git")):
            return folder
        if any(os.path.isfile(os.path.join(folder, m)) for m in _PROJECT_MARKERS):
            best = folder
        parent = os.path.dirname(folder)
        if (inside and folder == limit) or parent == folder:
            return best if best is not None or not inside else limit
        folder = parent


def use_of_weights(root: str) -> str:
    """What the project below ``root`` does with its models' weights, read
    from its Python files and notebooks once per process: TRAINS when any
    of them trains (``_TRAINS``); INFERENCE when none does and one loads
    weights (``_LOADS``): an inference release, a model's reference code
    and its checkpoint loader, whose parameters only ever hold a
    checkpoint's values; NEITHER otherwise (a snippet, a library of layers)."""
    if root not in _WEIGHTS_USE:
        files = _source_files(root, (".py", ".ipynb"))
        use = TRAINS if len(files) > _SCAN_LIMIT else NEITHER
        for path in files:
            if use == TRAINS:
                break
            text = _read_text(path)
            if _TRAINS.search(text):
                use = TRAINS
            elif use == NEITHER and _LOADS.search(text):
                use = INFERENCE
        _WEIGHTS_USE[root] = use
    return _WEIGHTS_USE[root]


#: the signs of a pure half-precision run (see :func:`runs_pure_half`): a half
#: dtype, to be found given or assigned
_HALF_DTYPE = re.compile(r"torch\.(?:float16|half|bfloat16)\b")
#: what may come right before a half dtype for it to be given or assigned
#: (not compared): ``=`` (not ``==``), ``:``, an open ``.to(``, ``set_default_dtype(``
_GIVEN_BEFORE = re.compile(r"(?:(?<![=!<>])=|:|\.to\([^)\n]*|set_default_dtype\()\s*\Z")
#: a sign of reduced precision in a file's text: a literal to look for first
#: (``str.find``), then the pattern that must match (None: the literal is
#: enough), and whether the pattern's match must start a word (checked by hand:
#: a pattern that starts with ``\b`` has no literal prefix for the regex engine
#: to scan for, and tries every position of the text)
_Sign = Tuple[str, Optional["re.Pattern[str]"], bool]
#: the other signs
_HALF_SIGNS: Tuple[_Sign, ...] = (
    (".half(", re.compile(r"\.half\(\s*\)"), False),
    (".bfloat16(", re.compile(r"\.bfloat16\(\s*\)"), False),
    ("fp16", re.compile(r"[\"']fp16[\"']\s*:\s*\{"), False),
    ("opt_level", re.compile(r"opt_level\s*=\s*[\"']O[23]"), False),
    ("-true", re.compile(r"[\"'](?:16|bf16)-true[\"']"), False),
    ("Tensor", re.compile(r"set_default_tensor_type\([^)\n]*(?:Half|BFloat16)Tensor"), False),
    ("deepspeed.initialize(", None, False),
)


def _shows(text: str, signs: Sequence[_Sign]) -> bool:
    """Whether ``text`` shows one of ``signs`` (see ``_Sign``)."""
    for literal, pattern, word in signs:
        if literal not in text:
            continue
        if pattern is None:
            return True
        for found in pattern.finditer(text):
            at = found.start()
            if not word or at == 0 or not (text[at - 1].isalnum() or text[at - 1] == "_"):
                return True
    return False


def runs_pure_half(text: str) -> bool:
    """Whether a file's text runs something in pure half precision (no
    autocast): a half cast (``.half()``, ``.to(torch.float16)``), a half dtype
    given or assigned (a loader's ``torch_dtype=torch.float16``, FSDP's
    ``compute_dtype = torch.float16``, a tensor made with
    ``dtype=torch.float16``, a table ``{"fp16": torch.float16}``), a half
    default dtype, DeepSpeed's engine (its fp16/bf16 modes cast the model;
    the config is often a JSON file) or ``"fp16": {...}`` config, apex's
    O2/O3, Lightning's ``"16-true"``, a ``HalfTensor`` default tensor type
    (LLaMA's reference code); bfloat16 alike. A dtype compared
    (``x.dtype == torch.half``) is not a cast, nor is a custom op's
    ``@custom_fwd(cast_inputs=torch.float16)``, which casts only under
    autocast (:func:`runs_mixed_precision` counts it). Each sign is a literal found
    with ``str.find`` before any pattern runs (most files have none)."""
    if _shows(text, _HALF_SIGNS):
        return True
    if "torch.float16" not in text and "torch.half" not in text and "torch.bfloat16" not in text:
        return False
    for found in _HALF_DTYPE.finditer(text):
        start = found.start()
        if _GIVEN_BEFORE.search(text, max(0, start - 120), start) and not _AUTOCAST_ONLY.search(
                text, max(0, start - 40), start):
            return True
    return False


#: a half dtype that applies only under autocast: ``@custom_fwd(cast_inputs=torch.float16)``
#: casts a custom op's inputs when autocast is on (a mixed-precision sign, not a cast)
_AUTOCAST_ONLY = re.compile(r"cast_inputs\s*=\s*\Z")


#: root -> (whether a Python file or notebook below it runs something in pure
#: half, whether one runs mixed precision): see :func:`_precision_in_code`
_PRECISION_IN_CODE: Dict[str, Tuple[bool, bool]] = {}


def _precision_in_code(root: str) -> Tuple[bool, bool]:
    """(whether any Python file or notebook below ``root``, tests included,
    runs something in pure half precision (:func:`runs_pure_half`), whether
    any file outside test code runs something in half or mixed precision
    (:func:`runs_mixed_precision`)), each file read once per process for
    both; the scan stops at the first pure half cast outside test code,
    which answers both facts. Both true past ``_SCAN_LIMIT`` files."""
    if root not in _PRECISION_IN_CODE:
        files = _source_files(root, (".py", ".ipynb"))
        half = reduced = len(files) > _SCAN_LIMIT
        for path in files if not half else ():
            text = _read_text(path)
            test = is_test_path(path, root)
            if runs_pure_half(text):
                half = True
                if not test:
                    reduced = True
                    break
            elif not test and not reduced:
                reduced = runs_mixed_precision(text)
        _PRECISION_IN_CODE[root] = (half, reduced)
    return _PRECISION_IN_CODE[root]


def casts_to_half(root: str) -> bool:
    """Whether any Python file or notebook below ``root`` (tests included:
    a test of half inputs says the code is meant for them) runs something
    in pure half precision (:func:`runs_pure_half`), read once per process.
    Where none does, the project runs in float32, under autocast at most:
    CUDA/MPS autocast computes ``exp``, ``softmax`` and ``log`` in float32.
    Assumed true past ``_SCAN_LIMIT`` files."""
    return _precision_in_code(root)[0]


#: the signs of a mixed-precision run in code (see :func:`runs_mixed_precision`)
_MIXED_SIGNS: Tuple[_Sign, ...] = (
    ("autocast", re.compile(r"autocast\((?![^)\n]*enabled\s*=\s*False)"), False),
    ("cast_inputs", re.compile(r"cast_inputs\s*=\s*torch\.(?:float16|half|bfloat16)\b"), False),
    ("GradScaler", None, False),
    ("amp.initialize(", re.compile(r"amp\.initialize\("), True),
    ("use_amp", re.compile(r"use_amp\b"), True),
    ("--amp", re.compile(r"[\"']--amp[\"']"), False),
    ("amp", re.compile(r"amp\s*=\s*True"), True),
    ("precision", re.compile(r"precision\s*=\s*[\"']?(?:16|bf16)|mixed_precision\s*=\s*[\"'](?:fp16|bf16)"), False),
    ("fp16", re.compile(r"fp16\s*(?:=\s*True|:\s*true)"), True),
    ("bf16", re.compile(r"bf16\s*(?:=\s*True|:\s*true)"), True),
    ("--", re.compile(r"[\"']--(?:fp16|bf16)[\"']"), False),
    ("Accelerator(", None, False),
    ("deepspeed", None, False),
    # switches given on the command line: HF's `--fp16`, Lightning's `--trainer.precision`
    ("TrainingArguments", None, False),
    ("LightningCLI", None, False),
    ("from_argparse_args", None, False),
)
#: the same in a configuration file (YAML, JSON, TOML, a launch script):
#: any mention of a reduced-precision setting
_MIXED_CONFIG = re.compile(
    r"fp16|bf16|float16|bfloat16|16-mixed|precision[\"']?\s*[:=]\s*[\"']?16|\bamp\b|autocast|mixed.precision",
    re.IGNORECASE)
_CONFIG_SUFFIXES = (".yaml", ".yml", ".json", ".toml", ".cfg", ".ini", ".sh")
#: configuration files larger than this are data, not settings
_CONFIG_FILE_LIMIT = 256 * 1024


def runs_mixed_precision(text: str) -> bool:
    """Whether a file's code runs something under autocast or another
    mixed-precision setting: ``autocast(...)`` (not ``enabled=False``), a
    ``GradScaler``, apex's ``amp.initialize``, a ``use_amp``/``--amp``/
    ``--fp16`` switch, Lightning's ``precision=16``/``"16-mixed"``,
    accelerate's ``mixed_precision="fp16"`` or its ``Accelerator`` (set by
    ``accelerate launch``), HF's ``fp16=True``, DeepSpeed."""
    return _shows(text, _MIXED_SIGNS)


def runs_reduced_precision(text: str) -> bool:
    """Whether a file's text runs something in float16 or bfloat16, pure
    (:func:`runs_pure_half`) or mixed (:func:`runs_mixed_precision`)."""
    return runs_pure_half(text) or runs_mixed_precision(text)


_MIXED_USE: Dict[str, bool] = {}


def uses_reduced_precision(root: str) -> bool:
    """Whether anything below ``root`` runs in float16 or bfloat16: a pure
    half cast (:func:`runs_pure_half`) or mixed precision
    (:func:`runs_mixed_precision`) in code that is not a test (notebooks
    included), or a configuration file that mentions a reduced-precision
    setting. Where nothing does, the project runs its models in float32 (a
    float16 hazard needs a user's own autocast). A test's half tensors say
    what the test checks, not how the project runs (stanza's only half
    cast is a visualisation test's state dict; botorch and gpytorch test
    their half settings and run in float64). Assumed true past
    ``_SCAN_LIMIT`` files."""
    if root not in _MIXED_USE:
        _MIXED_USE[root] = _precision_in_code(root)[1] or _configs_reduced(root)
    return _MIXED_USE[root]


_CONFIG_USE: Dict[str, bool] = {}
_NOTEBOOK_USE: Dict[str, bool] = {}


def _configs_reduced(root: str) -> bool:
    """Whether a configuration file below ``root`` mentions a reduced-precision
    setting (or there are too many to read)."""
    if root not in _CONFIG_USE:
        configs = _source_files(root, _CONFIG_SUFFIXES)
        _CONFIG_USE[root] = len(configs) > _SCAN_LIMIT or any(_mixed_config(f) for f in configs)
    return _CONFIG_USE[root]


def _notebooks_reduced(root: str) -> bool:
    """Whether a notebook below ``root`` runs something in reduced precision,
    read once per process."""
    if root not in _NOTEBOOK_USE:
        _NOTEBOOK_USE[root] = any(runs_reduced_precision(_read_text(f)) for f in _source_files(root, (".ipynb",)))
    return _NOTEBOOK_USE[root]


_MAIN_BLOCK = re.compile(r"^if\s+__name__\s*==\s*[\"']__main__[\"']", re.MULTILINE)
_PROGRAMS_USE: Dict[Tuple[str, str], Optional[bool]] = {}


def programs_use_reduced_precision(path: str, root: str) -> Optional[bool]:
    """Whether the programs of the project that run ``path`` run anything in
    reduced precision: None when that cannot be told, and the project-wide
    answer (:func:`uses_reduced_precision`) stands.

    The programs are the files that import ``path``, directly or through
    other modules (test code left out), and hold an ``if __name__ ==
    "__main__":`` block or are scripts (outside a package, imported by
    nothing); ``path`` itself counts when it has such a block. They run
    reduced precision when one of them, or a project module one of them
    imports (directly or not, the packages' ``__init__`` modules included),
    shows a half cast or a mixed-precision setting. A sub-project's
    scripts (a baseline model vendored into a repository, with its own
    ``main.py``) or an example that trains in float32 thus say how their
    models run, whatever another program of the repository does.

    None when: no program is found; an ``__init__`` of a top-level package
    imports ``path`` (library code: its users run it, and they are not all
    here); a star import or a project too large to list hides who imports
    it; a notebook or a configuration file of the project mentions reduced
    precision (neither can be tied to the programs that read it)."""
    key = (os.path.abspath(path), root)
    if key in _PROGRAMS_USE:
        return _PROGRAMS_USE[key]
    _PROGRAMS_USE[key] = None
    if _configs_reduced(root) or _notebooks_reduced(root):
        return None
    index = _importers(root)
    if isinstance(index, _Unlisted):
        return None
    users, frontier = {key[0]}, [key[0]]
    while frontier:
        entries = index.get(frontier.pop(), [])
        if entries is None:
            return None
        for other, _, _, test in entries:
            if not test and other not in users:
                users.add(other)
                frontier.append(other)
    for user in users:
        if os.path.basename(user) == "__init__.py" and not os.path.isfile(
                os.path.join(os.path.dirname(os.path.dirname(user)), "__init__.py")):
            return None  # a top-level package re-exports it: library code
    programs = [u for u in users if _MAIN_BLOCK.search(_read_text(u)) or u != key[0] and not any(
        not t for *_, t in index.get(u) or ()) and not os.path.isfile(os.path.join(os.path.dirname(u), "__init__.py"))]
    if not programs:
        return None
    seen: Set[str] = set()
    stack = list(programs)
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if runs_reduced_precision(_read_text(current)):
            _PROGRAMS_USE[key] = True
            return True
        stack.extend(_imported_files(current, root))
    _PROGRAMS_USE[key] = False
    return False


#: a package that imports its modules by computed names: who imports one cannot be read
_DYNAMIC_IMPORT = re.compile(r"import_module\(|__import__\(|walk_packages\(|iter_modules\(|import_all_modules\(")
_NEVER_IMPORTED: Dict[Tuple[str, str], bool] = {}
_PACKAGING = ("setup.py", "setup.cfg", "pyproject.toml")
_DOCS = (".md", ".rst", ".txt")


def never_imported(path: str, root: str) -> bool:
    """Whether ``path`` is a module of a package that nothing in the project
    below ``root`` imports, runs or names: its package's ``__init__`` imports
    other modules of the package (it curates what the package holds) but not
    this one, and its name appears in no other file of the project (an import
    of it names it; so do a notebook, a configuration file -- a registry
    config's ``custom_imports``, a hydra ``_target_``, a launch script's
    ``-m`` -- and documentation, a README's ``from pkg.mod import X``). It is
    no program (no ``__main__`` block) and no test. A package whose
    ``__init__`` modules import by computed names (``import_module``,
    ``__import__``, ``walk_packages``) keeps its modules live (a script that
    imports a plugin package by a configured path runs that package's
    ``__init__``, which this reads), and so does an installable
    package (a ``setup.py``, ``setup.cfg`` or ``pyproject.toml`` above it in
    the project: a library, whose users import its modules one by one). Such
    a module is dead in the project (a loss kept beside the one the package
    exports); only a user who imports it by hand runs it. The cheap tests
    come first: the scan of the project's text runs only for a module its
    curated package leaves out."""
    key = (os.path.abspath(path), root)
    if key in _NEVER_IMPORTED:
        return _NEVER_IMPORTED[key]
    _NEVER_IMPORTED[key] = False
    if not _maybe_dead(key[0], root):
        return False
    folder, name = os.path.split(key[0])
    init = os.path.join(folder, "__init__.py")
    exported = _imported_files(init, root)
    if key[0] in exported or not any(os.path.dirname(f) == folder and f != init for f in exported):
        return False  # the package imports it, or exports nothing of its own (no sign it left it out)
    package = folder
    while os.path.isfile(os.path.join(package, "__init__.py")):
        if _DYNAMIC_IMPORT.search(_read_text(os.path.join(package, "__init__.py"))):
            return False  # the package imports its modules by computed names
        package = os.path.dirname(package)
    # an installable package (a library) is imported module by module by its users
    # (`from vit_pytorch.ats_vit import ViT`): none of its modules is dead
    if installable(package, root):
        return False
    if _named_in(_source_files(root, (".py", ".ipynb", *_CONFIG_SUFFIXES, *_DOCS)), name[:-3], key[0]):
        return False
    _NEVER_IMPORTED[key] = True
    return True


def installable(folder: str, root: str) -> bool:
    """Whether a ``setup.py``, ``setup.cfg`` or ``pyproject.toml`` lies in
    ``folder`` or above it up to the project root: the code there is a
    library, whose users import its modules and call its functions with
    arguments of their own."""
    above = folder
    while True:
        if any(os.path.isfile(os.path.join(above, m)) for m in _PACKAGING):
            return True
        if os.path.abspath(above) == os.path.abspath(root) or os.path.dirname(above) == above:
            return False
        above = os.path.dirname(above)


_NAMED: Dict[Tuple[str, str, str], bool] = {}


def named_elsewhere(name: str, path: str, root: str) -> bool:
    """Whether ``name`` appears as a word in a file of the project below
    ``root`` other than ``path``: its code, notebooks or configuration (a
    hydra ``_target_``). True when the project is too large to list. A
    method named nowhere else is called only where its own file calls it,
    unless a framework calls it by name (which :meth:`Facts.arguments_for`
    rules out by asking for calls in the file)."""
    key = (name, os.path.abspath(path), root)
    if key not in _NAMED:
        files = _source_files(root, (".py", ".ipynb", *_CONFIG_SUFFIXES))
        _NAMED[key] = len(files) > _SCAN_LIMIT or _named_in(files, name, key[1])
    return _NAMED[key]


_UNUSED: Dict[Tuple[str, str, str], bool] = {}


def unused_definition(name: str, path: str, root: str) -> bool:
    """Whether ``name``, defined in ``path``, is left out of what the project
    below ``root`` uses of a module it does use: another (non-test) file
    imports the module, and no other file mentions the name -- its code,
    notebooks, configuration, launch scripts and documentation (a README's
    ``from pkg.losses import dice_loss``, a script's ``--model UNet`` read by
    ``getattr``). The dead loss kept beside the ones a training script takes
    from the module. False when the project is too large to list, or
    nothing imports the module (a script, an entry point, a module of
    unknown use: :func:`never_imported` judges modules)."""
    key = (name, os.path.abspath(path), root)
    if key not in _UNUSED:
        _UNUSED[key] = False
        index = _importers(root)
        users = None if isinstance(index, _Unlisted) else index.get(key[1])
        if users and any(not test for *_, test in users):
            files = _source_files(root, (".py", ".ipynb", *_CONFIG_SUFFIXES, *_DOCS))
            _UNUSED[key] = len(files) <= _SCAN_LIMIT and not _named_in(files, name, key[1])
    return _UNUSED[key]


def _named_in(files: Sequence[str], name: str, skip: str) -> bool:
    """Whether ``name`` appears as a word in one of ``files`` other than ``skip``."""
    word = re.compile(rf"(?<!\w){re.escape(name)}(?!\w)")
    for other in files:
        if other != skip:
            text = _read_text(other)
            if name in text and word.search(text):
                return True
    return False


def _maybe_dead(path: str, root: str, text: Optional[str] = None) -> bool:
    """What :func:`never_imported` can tell from the file alone: a module (not
    an ``__init__``) of a package, no test, no program."""
    folder, name = os.path.split(path)
    return (name.endswith(".py") and name != "__init__.py" and os.path.isfile(os.path.join(folder, "__init__.py"))
            and not is_test_path(path, root)
            and not _MAIN_BLOCK.search(_read_text(path) if text is None else text))


def _imported_files(path: str, root: str) -> List[str]:
    """The project files that importing ``path``'s imports runs: each
    imported module and the ``__init__`` modules of the packages above it."""
    base = _import_roots(path, root)
    out: List[str] = []
    modules = [imp.module if imp.symbol is None else f"{imp.module}.{imp.symbol}"
               for imp in module_imports(path).values()] + star_imports(path)
    for module in modules:
        parts = module.split(".")
        for end in range(1, len(parts) + 1):
            found = find_module(".".join(parts[:end]), base)
            if found is not None:
                out.append(found)
    return out


def _mixed_config(path: str) -> bool:
    try:
        if os.path.getsize(path) > _CONFIG_FILE_LIMIT:
            return False
    except OSError:
        return False
    return bool(_MIXED_CONFIG.search(_read_text(path)))


# -- who calls a function -------------------------------------------------------------

#: test code: its callers choose their own inputs, so they say nothing of the
#: values a function meets in training or inference
TEST_DIRS = frozenset({"test", "tests", "testing"})
TEST_FILE = re.compile(r"^(?:test_\w*|\w+_tests?|conftest)\.(?:py|ipynb)$")
#: root -> importer index: target file -> [(importer, local name, symbol or None,
#: whether the importer is test code)]; a star import is (importer, STAR, STAR, test);
#: a project too large to list has the index ``_UNLISTED``, where every lookup is None
_IMPORTERS: Dict[str, Dict[str, Optional[List[Tuple[str, str, Optional[str], bool]]]]] = {}


def is_test_path(path: str, root: str) -> bool:
    """Test code below ``root``: a ``test``/``tests``/``testing`` folder, or
    ``test_*.py``, ``*_test.py``, ``*_tests.py``, ``conftest.py``."""
    parts = os.path.relpath(path, root).split(os.sep)
    return bool(TEST_FILE.match(parts[-1])) or any(p in TEST_DIRS for p in parts[:-1])


#: the local name of a function a file has from a star import (``from m import *``)
STAR = "*"


def _importers(root: str) -> Dict[str, Optional[List[Tuple[str, str, Optional[str], bool]]]]:
    """Which files below ``root`` (test code marked) import what from which
    project file, read once per process: an imported name (``from pkg.mod
    import f as g``: ``g``, symbol ``f``), a module (``import pkg.mod as m``,
    ``from pkg import mod``: ``m``, symbol None), and a name an ``__init__``
    re-exports (``from pkg import f`` where ``pkg/__init__.py`` imports ``f``
    from ``pkg.mod``)."""
    if root not in _IMPORTERS:
        index: Dict[str, Optional[List[Tuple[str, str, Optional[str], bool]]]] = {}
        files = _source_files(root)
        if len(files) > _SCAN_LIMIT:
            # past the limit the listing stops: an importer may be missing, so
            # no function's callers can be listed
            _IMPORTERS[root] = _UNLISTED
            return _UNLISTED
        for other in files:
            test = is_test_path(other, root)
            base = _import_roots(other, root)
            for imp in module_imports(other).values():
                if imp.symbol is not None:
                    sub = find_module(f"{imp.module}.{imp.symbol}", base)
                    if sub is not None:
                        _add_importer(index, sub, (other, imp.local, None, test))
                        continue
                    owner = find_module(imp.module, base)
                    if owner is None:
                        continue
                    _add_importer(index, owner, (other, imp.local, imp.symbol, test))
                    again = module_imports(owner).get(imp.symbol) if owner.endswith("__init__.py") else None
                    if again is not None and again.symbol is not None:
                        origin = find_module(again.module, [package_root(owner)])
                        if origin is not None:
                            _add_importer(index, origin, (other, imp.local, again.symbol, test))
                else:
                    owner = find_module(imp.module, base)
                    if owner is not None:
                        _add_importer(index, owner, (other, imp.local, None, test))
            for module in star_imports(other):
                target = find_module(module, base)
                if target is not None:
                    _add_importer(index, target, (other, STAR, STAR, test))
        _IMPORTERS[root] = index
    return _IMPORTERS[root]


def _import_roots(path: str, root: str) -> List[str]:
    """Where the imports of a project file may resolve: its package root,
    up to two folders above it (``tests/ops/test_x.py`` importing ``pkg.ops``
    of the repository that holds both), and the project root."""
    out = [package_root(path)]
    for _ in range(2):
        up = os.path.dirname(out[-1])
        if up == out[-1] or not (up + os.sep).startswith(root.rstrip(os.sep) + os.sep):
            break
        out.append(up)
    if root not in out:
        out.append(root)
    return out


class _Unlisted(dict):
    """The importer index of a project too large to list: every lookup is None."""

    def get(self, key, default=None):  # type: ignore[override]
        return None


_UNLISTED = _Unlisted()


def _add_importer(index, target: str, entry: Tuple[str, str, Optional[str], bool]) -> None:
    index.setdefault(target, []).append(entry)


def callers(path: str, name: str, root: str) -> Optional[List[Tuple[str, str, bool, bool]]]:
    """The other files of the project below ``root`` that may call function
    ``name`` of ``path``: (file, the local name it goes by there, whether
    that name is the module -- ``m.name(...)``, whether the file is test code).
    A file that star-imports the module (``from nerf.utils import *``) and
    names the function calls it by its own name, spelled ``*name`` here (its
    import does not spell it); it also passes the name on, so the files that
    import it from there are followed (a private ``_name`` is no part of a
    star import); a package ``__init__`` that star-imports it is listed
    whether or not it names it: it re-exports the function to the package's
    users. None when the project is too large to list."""
    index = _importers(root)
    if isinstance(index, _Unlisted):
        return None
    out: Set[Tuple[str, str, bool, bool]] = set()
    seen = {os.path.abspath(path)}
    todo = [os.path.abspath(path)]
    while todo:
        for other, local, symbol, test in index.get(todo.pop(), []) or []:
            if other == path:
                continue
            if symbol is None:
                if name in _module_attributes(other, local):
                    out.add((other, local, True, test))
            elif symbol == name:
                out.add((other, local, False, test))
            elif symbol == STAR and not name.startswith("_") and other not in seen:
                seen.add(other)
                todo.append(other)
                text = _read_text(other)
                if other.endswith("__init__.py") or name in text and re.search(
                        rf"(?<![\w.]){re.escape(name)}\b", text):
                    # a package's `__init__` re-exports it to the package's users (an API)
                    out.add((other, STAR + name, False, test))
    return sorted(out)


def module_importers(path: str, root: str) -> List[str]:
    """The files below ``root`` that import ``path``'s module as a module
    (``import pkg.mod as m``) or take all its names (``from pkg.mod import
    *``, followed on through their own star importers), whether or not they
    use a given function of it: a cached list of callers rests on them too
    (one may start calling it)."""
    index = _importers(root)
    out: Set[str] = set()
    todo = [os.path.abspath(path)]
    while todo:
        for other, _, symbol, _ in index.get(todo.pop(), []) or []:
            if other != path and (symbol is None or symbol == STAR) and other not in out:
                out.add(other)
                if symbol == STAR:
                    todo.append(other)
    return sorted(out)


_ATTRIBUTES: Dict[Tuple[str, str], FrozenSet[str]] = {}


def _module_attributes(path: str, local: str) -> FrozenSet[str]:
    """The attributes a file reads from the module it imports as ``local``
    (``m.f(...)``, ``m.C``), by its text: a file that imports a module of
    utilities but never names ``m.f`` does not call ``f``."""
    key = (path, local)
    if key not in _ATTRIBUTES:
        data = _read_bytes(path)
        _note_hash(path, data)  # the callers fact notes its hash: one read for both
        text = data.decode("utf-8", "replace") if data is not None else ""
        # the pattern starts with the literal name, which the regex engine finds
        # fast; a name that only ends another (``my_utils.f``) is dropped after
        pattern = re.compile(rf"{re.escape(local)}\s*\.\s*([A-Za-z_]\w*)")
        _ATTRIBUTES[key] = frozenset(
            m.group(1) for m in pattern.finditer(text)
            if m.start() == 0 or not (text[m.start() - 1].isalnum() or text[m.start() - 1] in "_."))
    return _ATTRIBUTES[key]


def _callers_fact(subject: str) -> str:
    """``callers:<name>:<path>``: the files that may call it, each with its
    content hash (a caller edited, added or removed changes the value)."""
    name, _, rest = subject.partition(":")
    path, _, root = rest.partition("|")
    found = callers(path, name, root)
    if found is None:
        return "?"
    listed = {other for other, *_ in found}
    # a module's importers that do not call it now: an edit may make one a caller
    watched = [f"{other}|||w|{content_hash(other) or ''}" for other in module_importers(path, root) if other not in listed]
    return ";".join([f"{other}|{local}|{int(via)}|{int(test)}|{content_hash(other) or ''}"
                     for other, local, via, test in found] + watched)


# -- summaries ---------------------------------------------------------------------


@dataclass
class FunctionSummary:
    name: str
    #: numeric parameter defaults
    defaults: Dict[str, float] = field(default_factory=dict)
    #: PROBABILITY / LOG_PROBABILITY / EXP: what every return of it is
    returns: Optional[str] = None
    clips_gradients: bool = False
    initialises: bool = False
    fills_neg_inf: bool = False


@dataclass
class ModuleSummary:
    path: str
    constants: Dict[str, float] = field(default_factory=dict)
    #: ``helper`` and ``Class.method``
    functions: Dict[str, FunctionSummary] = field(default_factory=dict)
    #: class name -> field name -> numeric default
    fields: Dict[str, Dict[str, float]] = field(default_factory=dict)
    #: class name -> its bases as spelled (``nn.Module``, ``Module``, ``moe.GroupedExperts``)
    bases: Dict[str, List[str]] = field(default_factory=dict)
    #: classes with an init hook that sweeps the whole module (``init_weights``
    #: iterating ``self.parameters()`` / ``self.children()``, ``self.apply(...)``)
    init_protocol: Set[str] = field(default_factory=set)
    #: module constants naming a torch dtype (``_GLOBAL_DTYPE = torch.float64``) -> ``float64``
    dtypes: Dict[str, str] = field(default_factory=dict)


_SUMMARIES: Dict[str, Tuple[str, ModuleSummary]] = {}


def summary(path: str, text: Optional[str] = None) -> Optional[ModuleSummary]:
    """The summary of a module file, cached per process by content hash."""
    digest = content_hash(path) if text is None else hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    if digest is None:
        return None
    cached = _SUMMARIES.get(path)
    if cached is not None and cached[0] == digest:
        return cached[1]
    if text is None:
        data = _read_bytes(path)
        if data is None:
            return None
        text = data.decode("utf-8", "replace")
    try:
        result = summarise(ast.parse(text), path)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        result = ModuleSummary(path)  # a module we cannot read tells nothing
    _SUMMARIES[path] = (digest, result)
    return result


def summarise(tree: ast.Module, path: str = "") -> ModuleSummary:
    out = ModuleSummary(path)
    for stmt in _flat(tree.body):
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            value = number(stmt.value, out.constants) if stmt.value is not None else None
            dtype = _torch_dtype(stmt.value)
            for t in targets:
                if isinstance(t, ast.Name):
                    if dtype is not None and t.id not in out.dtypes and t.id not in out.constants:
                        out.dtypes[t.id] = dtype
                    else:
                        out.dtypes.pop(t.id, None)  # rebound, or bound to something else: not a fact
                    if value is None:
                        out.constants.pop(t.id, None)
                    elif t.id in out.constants and out.constants[t.id] != value:
                        out.constants.pop(t.id)  # rebound: not a constant
                    else:
                        out.constants[t.id] = value
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.functions[stmt.name] = _function(stmt, out.constants)
        elif isinstance(stmt, ast.ClassDef):
            fields: Dict[str, float] = {}
            for item in stmt.body:
                if isinstance(item, (ast.Assign, ast.AnnAssign)) and item.value is not None:
                    targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                    value = number(item.value, out.constants)
                    for t in targets:
                        if isinstance(t, ast.Name) and value is not None:
                            fields[t.id] = value
                elif isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    summary_ = _function(item, out.constants)
                    out.functions[f"{stmt.name}.{item.name}"] = summary_
                    if item.name == "__init__":
                        for name, value in _init_fields(item, summary_.defaults, out.constants).items():
                            fields.setdefault(name, value)
            out.fields[stmt.name] = fields
            out.bases[stmt.name] = [_dotted(b) for b in stmt.bases]
            if any(isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name != "__init__"
                   and INIT_HOOK.search(item.name) and _sweeps_self(item) for item in stmt.body):
                out.init_protocol.add(stmt.name)
    return out


#: the dtypes a module constant may name (``torch.float64``, ``torch.half``)
_DTYPE_NAMES = frozenset({"float16", "half", "bfloat16", "float32", "float", "float64", "double", "int8", "uint8",
                          "int16", "short", "int32", "int", "int64", "long", "bool"})


def _torch_dtype(value: Optional[ast.AST]) -> Optional[str]:
    """``float64`` for ``torch.float64`` (spelled so), else None."""
    if isinstance(value, ast.Attribute) and value.attr in _DTYPE_NAMES and isinstance(value.value, ast.Name) \
            and value.value.id == "torch":
        return value.attr
    return None


def _sweeps_self(func) -> bool:
    """Whether a method walks every parameter or submodule of ``self`` and
    initialises what it finds: it calls an initialiser (``nn.init.*``, an
    in-place fill such as ``normal_``) or an init hook (``child.init_states()``,
    ``m.reset_parameters()``), or hands a function to ``self.apply``.
    ``reset_attention_backend`` walking ``self.modules()`` to clear a setting
    does not."""
    sweeps = initialises = False
    for node in ast.walk(func):
        if isinstance(node, ast.Attribute) and node.attr in _SWEEPS and isinstance(node.value, ast.Name) \
                and node.value.id == "self":
            sweeps = True
            initialises |= node.attr == "apply"
        elif isinstance(node, ast.Call):
            dotted = _dotted(node.func)
            short = dotted.rsplit(".", 1)[-1]
            if ".init." in f".{dotted}" or short in _FILLS or (short != "__init__" and INIT_HOOK.search(short)):
                initialises = True
    return sweeps and initialises


def _flat(body):
    """Module-level statements, looking into ``if``/``try`` blocks."""
    for stmt in body:
        if isinstance(stmt, ast.If):
            yield from _flat(stmt.body)
            yield from _flat(stmt.orelse)
        elif isinstance(stmt, ast.Try):
            yield from _flat(stmt.body)
        else:
            yield stmt


def number(node: ast.AST, env: Dict[str, float]) -> Optional[float]:
    """The numeric value of a constant expression (``-1e-8``, ``10 ** -8``,
    ``float("-inf")``, ``-INF`` with ``INF`` in ``env``)."""
    if isinstance(node, ast.Constant):
        v = node.value
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    if isinstance(node, ast.Name):
        return env.get(node.id)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = number(node.operand, env)
        if inner is None:
            return None
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("math", "np", "numpy"):
        return {"inf": math.inf, "pi": math.pi, "e": math.e}.get(node.attr)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "float" and len(node.args) == 1:
        a = node.args[0]
        if isinstance(a, ast.Constant) and isinstance(a.value, str):
            try:
                return float(a.value)
            except ValueError:
                return None
        return number(a, env)
    if isinstance(node, ast.BinOp):
        left, right = number(node.left, env), number(node.right, env)
        if left is None or right is None:
            return None
        try:
            if isinstance(node.op, ast.Add):
                return left + right
            if isinstance(node.op, ast.Sub):
                return left - right
            if isinstance(node.op, ast.Mult):
                return left * right
            if isinstance(node.op, ast.Div):
                return left / right
            if isinstance(node.op, ast.Pow) and abs(right) < 400:
                return float(left ** right)
        except (ArithmeticError, ValueError, TypeError):
            return None
    return None


def _short(func: ast.AST) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


_PROB = frozenset({"softmax", "sigmoid"})
_LOGPROB = frozenset({"log_softmax", "logsigmoid"})
_BOUNDING = frozenset({"max", "amax", "logsumexp", "clamp", "clamp_max", "clip", "log_softmax", "logsigmoid", "minimum"})


def _returns_kind(value: ast.AST, local: Dict[str, ast.AST], depth: int = 0) -> Optional[str]:
    if depth > 4:
        return None
    if isinstance(value, ast.Name) and value.id in local:
        return _returns_kind(local[value.id], local, depth + 1)
    if not isinstance(value, ast.Call):
        return None
    short = _short(value.func)
    if short in _PROB:
        return PROBABILITY
    if short in _LOGPROB:
        return LOG_PROBABILITY
    if short in ("exp", "exp_"):
        inner = value.args[0] if value.args else getattr(value.func, "value", None)
        if inner is None or isinstance(inner, ast.UnaryOp) and isinstance(inner.op, ast.USub):
            return None
        if any(isinstance(n, ast.Call) and _short(n.func) in _BOUNDING for n in ast.walk(inner)):
            return None
        return EXP
    return None


def _is_neg_inf(node: ast.AST, env: Dict[str, float]) -> bool:
    value = number(node, env)
    if value is not None:
        return value == -math.inf
    return isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and _dotted(node.operand).endswith("inf")


def _function(func, env: Dict[str, float]) -> FunctionSummary:
    out = FunctionSummary(func.name)
    args = func.args
    positional = list(args.posonlyargs) + list(args.args)
    for a, default in zip(positional[len(positional) - len(args.defaults):], args.defaults):
        value = number(default, env)
        if value is not None:
            out.defaults[a.arg] = value
    for a, default in zip(args.kwonlyargs, args.kw_defaults):
        value = number(default, env) if default is not None else None
        if value is not None:
            out.defaults[a.arg] = value
    local: Dict[str, ast.AST] = {}
    kinds: List[Optional[str]] = []
    for node in _own_nodes(func):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            local[node.targets[0].id] = node.value
        elif isinstance(node, ast.Return) and node.value is not None:
            kinds.append(_returns_kind(node.value, local))
        elif isinstance(node, ast.Call):
            dotted = _dotted(node.func)
            short = dotted.rsplit(".", 1)[-1]
            if "clip_grad" in short:
                out.clips_gradients = True
            elif ".init." in f".{dotted}" and short.endswith("_"):
                out.initialises = True
            elif short in ("masked_fill", "masked_fill_", "fill_", "where", "full", "full_like") and any(
                _is_neg_inf(a, env) for a in list(node.args) + [k.value for k in node.keywords]
            ):
                out.fills_neg_inf = True
    if kinds and all(k == kinds[0] for k in kinds):
        out.returns = kinds[0]
    return out


def _own_nodes(func):
    """The nodes of a function body, not those of functions nested in it,
    in source order."""
    stack = list(reversed(func.body))
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        stack.extend(reversed(list(ast.iter_child_nodes(node))))


def _init_fields(init, defaults: Dict[str, float], env: Dict[str, float]) -> Dict[str, float]:
    """``self.eps = 1e-8`` or ``self.eps = eps`` (a numeric default) in ``__init__``."""
    out: Dict[str, float] = {}
    for node in _own_nodes(init):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            t = node.targets[0]
            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                if isinstance(node.value, ast.Name) and node.value.id in defaults:
                    out[t.attr] = defaults[node.value.id]
                else:
                    value = number(node.value, env)
                    if value is not None:
                        out[t.attr] = value
    return out


# -- the facts rules ask ---------------------------------------------------------


@dataclass(frozen=True)
class Constant:
    """A numeric value a name stands for, and where it was defined."""

    value: float
    #: how the source spells where it comes from: ``EPS``, ``pkg.consts.EPS``,
    #: ``Config.eps``
    origin: str
    #: defined in another module of the project
    imported: bool = False


def lookup(path: str, symbol: str, kind: str, depth: int = 0):
    """What ``symbol`` of the module at ``path`` is: a constant (kind
    "constant"), a function summary ("function") or a class's field defaults
    ("fields"); a re-export (``from .consts import EPS`` in an ``__init__``)
    is followed one step."""
    found = summary(path)
    if found is None:
        return None
    table = {"constant": found.constants, "function": found.functions, "fields": found.fields,
             "dtype": found.dtypes}[kind]
    if symbol in table:
        return table[symbol]
    imp = module_imports(path).get(symbol)
    if imp is None or imp.symbol is None or depth > 0:
        return None
    owner = find_module(imp.module, [package_root(path)])
    if owner is None or owner == path:
        return None
    return lookup(owner, imp.symbol, kind, depth + 1)


def inherits_init_protocol(project: Optional[ProjectFile], path: str, cls: str, depth: int = 0) -> bool:
    """Whether class ``cls`` of the module at ``path``, or a base class of it
    (followed through that module's imports, up to six classes deep), has an
    init hook that sweeps every parameter (``Module.init_states`` walking
    ``self.children()``): its subclasses' parameters are initialised by it."""
    found = summary(path)
    if found is None or depth > 6:
        return False
    if project is not None:
        project.consult(path)
    if cls in found.init_protocol:
        return True
    imports = module_imports(path)
    if cls not in found.bases:  # a re-export: ``from .module import Module`` in an ``__init__``
        imp = imports.get(cls)
        owner = find_module(imp.module, [package_root(path)]) if imp is not None and imp.symbol else None
        return owner is not None and owner != path and inherits_init_protocol(project, owner, imp.symbol, depth + 1)
    for base in found.bases[cls]:
        if base in found.bases:
            if base != cls and inherits_init_protocol(project, path, base, depth + 1):
                return True
            continue
        head, _, rest = base.partition(".")
        imp = imports.get(head)
        if imp is None or "." in rest:
            continue
        if rest:  # ``import pkg.mod as m`` / ``from pkg import mod``, then ``mod.Cls``
            module, symbol = (imp.module if imp.symbol is None else f"{imp.module}.{imp.symbol}"), rest
        elif imp.symbol is not None:  # ``from pkg.mod import Cls``
            module, symbol = imp.module, imp.symbol
        else:
            continue
        owner = find_module(module, [package_root(path)])
        if owner is not None and owner != path and inherits_init_protocol(project, owner, symbol, depth + 1):
            return True
    return False


def module_symbol(project: Optional[ProjectFile], local: str, attr: Optional[str] = None) -> Optional[Tuple[str, str]]:
    """(file, symbol) for an imported name (``EPS``) or an attribute of an
    imported module (``consts.EPS`` with ``attr="EPS"``)."""
    if project is None:
        return None
    target = project.target(local)
    if target is None:
        return None
    path, symbol = target
    if attr is None:
        return (path, symbol) if symbol is not None else None
    return (path, attr) if symbol is None else None


class ProjectFacts:
    """The cross-module queries of one checked file (``Facts.constant``,
    ``Facts.summary_of_call``): names are followed to this file's module
    constants, class fields and functions, and to those of the project
    modules it imports."""

    def __init__(self, facts) -> None:
        self.facts = facts
        self.ctx = facts.ctx
        self.project: Optional[ProjectFile] = getattr(self.ctx, "project", None)
        self._own: Optional[ModuleSummary] = None

    @property
    def own(self) -> ModuleSummary:
        """This file's summary (from its text, with ``ast``), built on first use."""
        if self._own is None:
            if self.project is not None:
                self._own = summary(self.project.path, self.ctx.source) or ModuleSummary(self.project.path)
            else:
                try:
                    self._own = summarise(ast.parse(self.ctx.source))
                except (SyntaxError, ValueError, RecursionError, MemoryError):
                    self._own = ModuleSummary("")
        return self._own

    # -- constants -------------------------------------------------------------
    def constant(self, node, depth: int = 0) -> Optional[Constant]:
        import libcst as cst

        from ..patterns import number as cst_number

        if depth > 6:
            return None
        value = cst_number(node)
        if value is not None:
            return Constant(value, self.ctx.code(node))
        if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, (cst.Minus, cst.Plus)):
            inner = self.constant(node.expression, depth + 1)
            if inner is None:
                return None
            sign = -1.0 if isinstance(node.operator, cst.Minus) else 1.0
            return Constant(sign * inner.value, inner.origin, inner.imported)
        if isinstance(node, cst.Call) and isinstance(node.func, cst.Name) and node.func.value == "float" and len(node.args) == 1:
            inner = node.args[0].value
            if isinstance(inner, cst.SimpleString) and isinstance(inner.evaluated_value, str):
                try:
                    return Constant(float(inner.evaluated_value), self.ctx.code(node))
                except ValueError:
                    return None
            return self.constant(inner, depth + 1)
        if isinstance(node, cst.Name):
            return self._name_constant(node, depth)
        if isinstance(node, cst.Attribute):
            return self._attribute_constant(node, depth)
        return None

    def _name_constant(self, node, depth: int) -> Optional[Constant]:
        scopes = self.facts.scopes
        bindings = scopes.reaching(node)
        if bindings:
            nearest = bindings[0]
            if nearest.kind not in ("assign", "walrus") or nearest.value is None:
                return None
            if scopes.scope_of.get(nearest.node) is scopes.module:
                if len(bindings) > 1:
                    return None  # rebound at module level: not a constant
                value = self.own.constants.get(node.value)
                if value is not None:
                    return Constant(value, node.value)
            found = self.constant(nearest.value, depth + 1)
            return found
        found = module_symbol(self.project, node.value)
        if found is None:
            return None
        value = lookup(found[0], found[1], "constant")
        if value is None:
            return None
        return Constant(value, self.project.dotted(node.value), imported=True)  # type: ignore[union-attr]

    def imported_dtype(self, node) -> Optional[str]:
        """The torch dtype (``float64``) that a name imported from a project
        module stands for (``from pkg.utils.global_dtype import _GLOBAL_DTYPE``),
        or None."""
        found = module_symbol(self.project, node.value)
        if found is None:
            return None
        return lookup(found[0], found[1], "dtype")

    def _attribute_constant(self, node, depth: int) -> Optional[Constant]:
        import libcst as cst

        owner, attr = node.value, node.attr.value
        if not isinstance(owner, cst.Name):
            return None
        if owner.value == "self":
            cls = self.facts.scopes.enclosing_class(node)
            values = [v for _, v in self.facts.scopes.self_attribute(node)]
            if cls is not None and values and all(v is not None for v in values):
                found = [self.constant(v, depth + 1) for v in values]
                if all(f is not None for f in found) and len({f.value for f in found}) == 1:  # type: ignore[union-attr]
                    return found[0]
            if cls is not None and not values:
                value = self.own.fields.get(cls.name.value, {}).get(attr)
                if value is not None:
                    return Constant(value, f"{cls.name.value}.{attr}")
            return None
        # an imported module's constant: `consts.EPS`
        found = module_symbol(self.project, owner.value, attr)
        if found is not None:
            value = lookup(found[0], found[1], "constant")
            if value is not None:
                return Constant(value, f"{self.project.dotted(owner.value)}.{attr}", imported=True)  # type: ignore[union-attr]
        # a class's field: `Config.eps`, `config.eps` (annotated `config: Config`
        # or assigned `config = Config(...)`)
        fields = self._class_fields(owner)
        if fields is not None:
            table, label, imported, overrides = fields
            if attr in overrides:
                return self.constant(overrides[attr], depth + 1)
            if attr in table:
                return Constant(table[attr], f"{label}.{attr}", imported)
        return None

    def _class_fields(self, owner):
        """(field defaults, class name, imported, keyword overrides) of the
        class a name stands for or is an instance of."""
        import libcst as cst

        from ..resolve import dotted_name

        overrides: Dict[str, object] = {}
        cls_name: Optional[str] = None
        bindings = self.facts.scopes.reaching(owner)
        if not bindings:
            cls_name = owner.value
        else:
            b = bindings[0]
            if b.kind == "param" and b.annotation is not None:
                cls_name = dotted_name(b.annotation)
            elif b.kind == "class":
                cls_name = owner.value
            elif b.kind in ("assign", "walrus") and isinstance(b.value, cst.Call) and isinstance(b.value.func, cst.Name):
                cls_name = b.value.func.value
                overrides = {a.keyword.value: a.value for a in b.value.args if a.keyword is not None}
        if not cls_name or "." in cls_name:
            return None
        if cls_name in self.own.fields:
            return self.own.fields[cls_name], cls_name, False, overrides
        found = module_symbol(self.project, cls_name)
        if found is None:
            return None
        table = lookup(found[0], found[1], "fields")
        if table is None:
            return None
        return table, self.project.dotted(cls_name), True, overrides  # type: ignore[union-attr]

    def base_initialises(self, base: str) -> bool:
        """Whether an imported base class (``Module``, ``protocols.Module``)
        brings an init hook that sweeps every parameter of its subclasses."""
        head, _, rest = base.partition(".")
        if "." in rest:
            return False
        found = module_symbol(self.project, head, rest or None)
        return found is not None and inherits_init_protocol(self.project, found[0], found[1])

    # -- helpers -------------------------------------------------------------
    def summary_of_call(self, call) -> Optional[FunctionSummary]:
        """The summary of the function a call reaches: a function or method
        of this file (``helper(x)``, ``self.helper(x)``, ``Cls.helper(x)``) or of
        an imported project module (``helper(x)``, ``mod.helper(x)``)."""
        import libcst as cst

        func = call.func
        if isinstance(func, cst.Name):
            bindings = self.facts.scopes.reaching(func)
            if bindings:
                if bindings[0].kind == "def" and self.facts.scopes.scope_of.get(bindings[0].node) is self.facts.scopes.module:
                    return self.own.functions.get(func.value)
                return None
            found = module_symbol(self.project, func.value)
            return lookup(found[0], found[1], "function") if found is not None else None
        if isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name):
            owner, method = func.value.value, func.attr.value
            if owner in ("self", "cls"):
                cls = self.facts.scopes.enclosing_class(call)
                return self.own.functions.get(f"{cls.name.value}.{method}") if cls is not None else None
            if not self.facts.scopes.reaching(func.value):
                if f"{owner}.{method}" in self.own.functions:
                    return self.own.functions[f"{owner}.{method}"]
                found = module_symbol(self.project, owner, method)
                if found is not None:
                    return lookup(found[0], found[1], "function")
        return None
