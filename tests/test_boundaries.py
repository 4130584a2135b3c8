"""The design's boundaries, read from the source (docs/architecture.md states them).

Every import in ``src/clonesweep`` is read with :mod:`ast`, at module level and inside
functions, plus ``importlib.import_module("<literal>")`` calls, and checked against
:data:`RULES`. The same walk checks three habits the boundaries rely on: a dependency's
private attributes are read only in its fence module, a dependency's error text is matched
only there, and no terminal escape codes are written below the CLI. Last, every third-party
package imported directly is declared in pyproject.toml.

A failure names the file, the line, the import and the rule, e.g.::

    workers/runner.py:41: `import optuna` breaks 'workers-below-driver': ...

Known exceptions owned by work in progress elsewhere sit in the ``*_PENDING`` tables, each
with the reason; an entry there that no longer occurs fails too, so the tables only shrink.

One file past ~300 lines on purpose: the rules, their exception tables and the walk that
checks them are read together when a rule changes.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "clonesweep"

# -- the fence modules: each dependency's private internals live in one module -------------
FENCES = {
    "optuna": "orchestrator/_optuna.py",
    "sqlalchemy": "orchestrator/_optuna.py",  # Optuna's own tables, through its private API
    "ray": "orchestrator/backends/ray/_ray.py",
    # Keras and TensorFlow internals: the engines' fence module (planned by that name; until
    # it exists the engines' own uses are listed in the *_PENDING tables below).
    "keras": "workers/_keras.py",
    "tensorflow": "workers/_keras.py",
}
FENCE_FILES = frozenset(FENCES.values())

# Worker modules that import a Keras backend's own library, and why.
BACKEND_LIBRARY_MODULES = {
    "tensorflow": (
        "workers/backend_setup.py",  # thread pools, GPU memory growth, imports it lean
        "workers/engines/kerasfit.py",  # tf.data feeds for Keras's fit
        "workers/engines/graphengine.py",  # the traced-graph engine's tf.functions
        "workers/engines/fusedgraph.py",  # the fused members' traced graph
        "workers/engines/graphops.py",  # the ops the traced graphs share
        "workers/_keras.py",  # planned: the Keras/TensorFlow fence module
    ),
    "jax": (
        "workers/backend_setup.py",  # the backend's version, loaded by name
        "workers/engines/jaxfused.py",  # fused members: jax.vmap / jit of the stateless step
        "workers/engines/jaxstate.py",  # the fused members' stacked state
        "workers/_keras.py",  # planned: the Keras/TensorFlow fence module
    ),
    "torch": (
        "workers/backend_setup.py",  # caps a packed worker's GPU memory on Keras's torch backend
    ),
}


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _under(*prefixes: str) -> Callable[[str], bool]:
    """Whether a dotted module name is one of ``prefixes`` or inside one."""
    return lambda name: any(name == p or name.startswith(p + ".") for p in prefixes)


def _in_files(*files: str) -> Callable[[str], bool]:
    modules = {_module_of(SRC / f) for f in files}
    return lambda name: name in modules


def _private_of(package: str) -> Callable[[str], bool]:
    """A module of ``package`` whose path has a private part (``optuna.storages._rdb``)."""
    return lambda name: (name.startswith(package + ".")
                         and any(part.startswith("_") for part in name.split(".")[1:]))



def _nothing(name: str) -> bool:
    return False


@dataclass(frozen=True)
class Rule:
    """Modules matching ``where`` (less ``exempt``) may not import modules matching
    ``forbids`` (less ``allows``)."""

    name: str
    text: str
    where: Callable[[str], bool]
    forbids: Callable[[str], bool]
    exempt: Callable[[str], bool] = _nothing
    allows: Callable[[str], bool] = _nothing

    def broken_by(self, importer: str, imported: str) -> bool:
        return (self.where(importer) and not self.exempt(importer)
                and self.forbids(imported) and not self.allows(imported))


PKG = "clonesweep"
SCREEN = ("rich", "curses", "_curses", "colorama", "blessed", "prompt_toolkit", "tqdm",
          "termios", "tty", "readline")

RULES = (
    Rule("spec-is-light",
         "spec/ reads sweep files: it imports no keras, ray, optuna, sqlalchemy, tensorflow, "
         "jax, torch, and nothing of workers/, orchestrator/ or cli/",
         where=_under(f"{PKG}.spec"),
         forbids=_under("keras", "ray", "optuna", "sqlalchemy", "tensorflow", "jax", "torch",
                        f"{PKG}.workers", f"{PKG}.orchestrator", f"{PKG}.cli")),
    Rule("workers-below-driver",
         "workers/ run on worker processes: no orchestrator/, no cli/, no optuna, no ray "
         "(they see the Reporter protocol of trials.py, never an Optuna trial)",
         where=_under(f"{PKG}.workers"),
         forbids=_under(f"{PKG}.orchestrator", f"{PKG}.cli", "optuna", "optuna_dashboard",
                        "ray")),
    Rule("optuna-in-orchestrator",
         "only orchestrator/ imports optuna, optuna_dashboard or sqlalchemy (the study is the "
         "driver's; the CLI calls orchestrator functions)",
         where=_under(PKG), exempt=_under(f"{PKG}.orchestrator"),
         forbids=_under("optuna", "optuna_dashboard", "sqlalchemy")),
    Rule("trackers-in-orchestrator",
         "only orchestrator/ imports optuna_integration, mlflow or wandb (the trackers are "
         "told on the driver, after the study: orchestrator/trackers.py)",
         where=_under(PKG), exempt=_under(f"{PKG}.orchestrator"),
         forbids=_under("optuna_integration", "mlflow", "wandb")),
    Rule("ray-in-ray-backend",
         "only orchestrator/backends/ray/ imports ray",
         where=_under(PKG), exempt=_under(f"{PKG}.orchestrator.backends.ray"),
         forbids=_under("ray")),
    *(Rule(f"{lib}-where-needed",
           f"only these worker modules import {lib}: {', '.join(files)}",
           where=_under(PKG), exempt=_in_files(*files), forbids=_under(lib))
      for lib, files in BACKEND_LIBRARY_MODULES.items()),
    Rule("screen-in-cli",
         f"terminal and screen code ({', '.join(SCREEN)}) only in cli/",
         where=_under(PKG), exempt=_under(f"{PKG}.cli"), forbids=_under(*SCREEN)),
    Rule("contract-leaves",
         "errors.py and trials.py import nothing of the package but each other",
         where=_under(f"{PKG}.errors", f"{PKG}.trials"), forbids=_under(PKG),
         allows=_under(f"{PKG}.errors", f"{PKG}.trials")),
    Rule("optuna-privates-fenced",
         f"Optuna's private modules are imported only in {FENCES['optuna']}",
         where=_under(PKG), exempt=_in_files(FENCES["optuna"]),
         forbids=_private_of("optuna")),
    Rule("ray-privates-fenced",
         f"Ray's private modules are imported only in {FENCES['ray']}",
         where=_under(PKG), exempt=_in_files(FENCES["ray"]), forbids=_private_of("ray")),
)

# Private attributes of other objects (``x._name``, ``getattr(x, "_name")``) read outside
# the fence modules today, each owned by work in progress elsewhere: (file, attribute).
PRIVATE_PENDING = {
    ("cli/main.py", "_option_string_actions"): "argparse's registered flags (cli area)",
}

# A dependency's error text matched outside the fence modules today: (file, the text).
TEXT_PENDING: dict[tuple[str, str], str] = {}


# -- reading the source ----------------------------------------------------------------------
def _sources() -> Iterator[tuple[str, str, ast.Module]]:
    """(path relative to src/clonesweep, dotted module name, parsed tree) for every file."""
    for path in sorted(SRC.rglob("*.py")):
        yield (path.relative_to(SRC).as_posix(), _module_of(path),
               ast.parse(path.read_text(), filename=str(path)))


@dataclass(frozen=True)
class Import:
    file: str
    line: int
    importer: str
    module: str  # absolute, dotted
    statement: str


def _imports(file: str, importer: str, tree: ast.Module) -> Iterator[Import]:
    package = importer if file.endswith("__init__.py") else importer.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(file, node.lineno, importer, alias.name, ast.unparse(node))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # A name from the package may be a submodule: count it as one.
            names = ({f"{base}.{alias.name}": None for alias in node.names}
                     if base.split(".")[0] == PKG else {base: None})
            for name in names:
                yield Import(file, node.lineno, importer, name, ast.unparse(node))
        elif (isinstance(node, ast.Call) and _called(node) in ("import_module", "__import__")
              and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            yield Import(file, node.lineno, importer, node.args[0].value, ast.unparse(node))


def _called(call: ast.Call) -> str:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def _all_imports() -> list[Import]:
    return [imp for file, module, tree in _sources() for imp in _imports(file, module, tree)]


# -- the checks ------------------------------------------------------------------------------
def boundary_violations(imports: list[Import]) -> list[str]:
    return [f"{imp.file}:{imp.line}: `{imp.statement}` breaks '{rule.name}': {rule.text}"
            for imp in imports for rule in RULES if rule.broken_by(imp.importer, imp.module)]


def test_imports_keep_the_boundaries() -> None:
    broken = boundary_violations(_all_imports())
    assert not broken, "import boundaries broken (docs/architecture.md):\n" + "\n".join(broken)


def test_the_walk_sees_function_level_and_dynamic_imports() -> None:
    """The rules would be empty words if the walk missed imports inside functions."""
    tree = ast.parse("def f():\n    import optuna\n    from . import sibling\n"
                     "    importlib.import_module('ray.util')\n")
    found = [(i.line, i.module) for i in _imports("workers/x.py", "clonesweep.workers.x", tree)]
    assert found == [(2, "optuna"), (3, "clonesweep.workers.sibling"), (4, "ray.util")]
    broken = boundary_violations(list(_imports("workers/x.py", "clonesweep.workers.x", tree)))
    assert broken[0].startswith("workers/x.py:2: `import optuna` breaks 'workers-below-driver'")
    assert {b.split(" breaks ")[1].split(":")[0] for b in broken} == {
        "'workers-below-driver'", "'optuna-in-orchestrator'", "'ray-in-ray-backend'"}


def _private_reads(tree: ast.Module) -> Iterator[tuple[int, str, str]]:
    """(line, attribute, expression) for ``x._name`` on an object other than self/cls, and
    for ``getattr(x, "_name"...)``."""
    for node in ast.walk(tree):
        name = None
        if isinstance(node, ast.Attribute):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                name = node.attr
        elif (isinstance(node, ast.Call) and _called(node) in ("getattr", "hasattr")
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
              and isinstance(node.args[1].value, str)
              and not (isinstance(node.args[0], ast.Name) and node.args[0].id == "self")):
            name = node.args[1].value
        if name and name.startswith("_") and not name.startswith("__"):
            yield node.lineno, name, ast.unparse(node)


def test_private_attributes_are_read_only_in_fence_modules() -> None:
    seen: set[tuple[str, str]] = set()
    broken = []
    for file, _, tree in _sources():
        if file in FENCE_FILES:
            continue
        for line, name, expr in _private_reads(tree):
            seen.add((file, name))
            if (file, name) not in PRIVATE_PENDING:
                broken.append(f"{file}:{line}: `{expr}` reads a private attribute; a "
                              f"dependency's internals belong in its fence module "
                              f"({', '.join(sorted(FENCE_FILES))})")
    gone = sorted(set(PRIVATE_PENDING) - seen)
    assert not broken, "\n".join(broken)
    assert not gone, f"no longer read, drop from PRIVATE_PENDING: {gone}"


_TEXT_NAMES = ("text", "message", "msg", "line", "s")


def _text_matches(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, the text) for ``"..." in str(x)`` / ``repr(x)`` / ``x.message`` / a variable
    named like an error text (``text``, ``message``...), and ``not in`` alike."""
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Compare) and len(node.ops) == 1
                and isinstance(node.ops[0], (ast.In, ast.NotIn))):
            continue
        needle, hay = node.left, node.comparators[0]
        if isinstance(needle, ast.Name) and needle.id.isupper():  # a module constant
            needle = _constant(tree, needle.id) or needle
        if not (isinstance(needle, ast.Constant) and isinstance(needle.value, str)):
            continue
        if ((isinstance(hay, ast.Call) and _called(hay) in ("str", "repr", "format_exc"))
                or (isinstance(hay, ast.Attribute) and hay.attr in ("message", "msg"))
                or (isinstance(hay, ast.Name) and hay.id in _TEXT_NAMES)):
            yield node.lineno, needle.value


def _constant(tree: ast.Module, name: str) -> ast.Constant | None:
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == name
                and isinstance(node.value, ast.Constant)):
            return node.value
    return None


def test_dependency_error_text_is_matched_only_in_fence_modules() -> None:
    seen: set[tuple[str, str]] = set()
    broken = []
    for file, _, tree in _sources():
        if file in FENCE_FILES:
            continue
        for line, text in _text_matches(tree):
            seen.add((file, text))
            if (file, text) not in TEXT_PENDING:
                broken.append(f"{file}:{line}: matches the error text {text!r}; match a "
                              f"type, or move the match into the dependency's fence module")
    gone = sorted(set(TEXT_PENDING) - seen)
    assert not broken, "\n".join(broken)
    assert not gone, f"no longer matched, drop from TEXT_PENDING: {gone}"


def test_no_terminal_escapes_below_the_cli() -> None:
    broken = [f"{file}:{node.lineno}: writes a terminal escape code {node.value[:20]!r} "
              f"(screen code belongs in cli/)"
              for file, module, tree in _sources() if not _under(f"{PKG}.cli")(module)
              for node in ast.walk(tree)
              if isinstance(node, ast.Constant) and isinstance(node.value, str)
              and ("\x1b" in node.value or "\x9b" in node.value)]
    assert not broken, "\n".join(broken)


# -- declared dependencies -------------------------------------------------------------------
# Import names whose distribution is not installed here (so metadata cannot tell).
_KNOWN_DISTS = {"torch": ("torch",), "psycopg2": ("psycopg2-binary", "psycopg2"),
                "yaml": ("pyyaml",), "sklearn": ("scikit-learn",),
                "optuna_dashboard": ("optuna-dashboard",), "sqlalchemy": ("sqlalchemy",)}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"],
                    *(r for extra in project["optional-dependencies"].values() for r in extra)]
    names = set()
    for requirement in requirements:
        match = re.match(r"[A-Za-z0-9._-]+", requirement)
        assert match, requirement
        names.add(_canonical(match.group()))
    return names


def test_every_imported_package_is_declared() -> None:
    declared = _declared()
    installed = importlib.metadata.packages_distributions()
    missing = []
    for imp in _all_imports():
        top = imp.module.split(".")[0]
        if top in (PKG, "__future__") or top in sys.stdlib_module_names:
            continue
        dists = {_canonical(d) for d in [*installed.get(top, ()), *_KNOWN_DISTS.get(top, ())]}
        if not dists & declared:
            missing.append(f"{imp.file}:{imp.line}: `{imp.statement}` imports {top!r} "
                           f"(distribution {sorted(dists) or 'unknown'}), not declared in "
                           f"pyproject.toml (dependencies or an extra)")
    assert not missing, "\n".join(missing)
