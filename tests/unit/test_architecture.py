"""The architecture of harness/ (ARCHITECTURE.md), checked on the source's AST.

Rules, each a test below; a failure names file:line, the rule and how to fix it:

- layers: a module imports only from its own layer and the layers below it
  (``LAYERS``); function-level (lazy) and ``TYPE_CHECKING`` imports count too;
- cycles: no import cycle between modules (the cycle's path is printed);
- pytest: only ``harness/pytest/`` imports pytest (and its plumbing: _pytest, pluggy, xdist);
- private names: no ``from m import _name``, no import of a ``_module``, and no
  ``x._name`` where ``_name`` is not defined in the module itself (another module's or a
  library's private name), but for ``PRIVATE_ALLOWED``;
- size: no module over ``MAX_LINES`` lines;
- probing: no ``getattr(obj, "literal")`` / ``hasattr(obj, "literal")`` (a protocol
  declares every member its callers use), but on an ``argparse.Namespace`` parameter and
  for ``PROBE_ALLOWED``;
- nodes/remote/ programs (shipped to nodes, run by a bare ``python3 -S``) import only
  the standard library.

Each checker runs once on harness/ and once on a small tree built in a temporary
directory with one known violation per rule, so a checker that finds nothing cannot pass
unnoticed.
"""

from __future__ import annotations

import ast
import functools
import itertools
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 600
EXCLUDED = ("harness/builtin/atomic/bin/",)  # the atomics' helper scripts: run on nodes

# layer -> the layers it may import (its own layer always)
LAYERS: dict[str, frozenset[str]] = {
    "core": frozenset(),
    "builtin": frozenset(),  # the built-in catalogue: data anyone may import
    "remote": frozenset(),  # nodes/remote/: stdlib-only programs shipped to nodes
    "api": frozenset({"core"}),  # harness/__init__.py: runs on every import of harness.*
    "nodes": frozenset({"core"}),
    "targets": frozenset({"core", "nodes"}),
    "sensors": frozenset({"core", "nodes"}),
    "engine": frozenset({"core", "nodes", "targets", "sensors"}),
    "report": frozenset({"core", "nodes", "sensors", "engine"}),
    "tools": frozenset({"core", "nodes", "sensors", "engine", "report"}),
    "pytest": frozenset({"core", "nodes", "targets", "sensors", "engine", "report", "tools"}),
    "cli": frozenset({"core", "nodes", "targets", "sensors", "engine", "report", "tools",
                      "pytest"}),
}
ANYONE_MAY_IMPORT = frozenset({"builtin"})
PYTEST_PLUMBING = frozenset({"pytest", "_pytest", "pluggy", "xdist"})

# (module, qualifier as written, attribute): why this private name of another module is fine
PRIVATE_ALLOWED: dict[tuple[str, str, str], str] = {
    ("harness.nodes.remote.stagerunner", "os", "_exit"):
        "os._exit is the documented way for a forked child to exit without the parent's "
        "cleanup (atexit, buffered files)",
}
# an object's own members, inherited from a base class in another module: the subclassing
# contract (its base's underscored members are there for subclasses)
INHERITED = frozenset({"self", "cls", "super()"})
# namedtuple's own API is underscored so that it never clashes with a field name
NAMEDTUPLE_API = frozenset({"_replace", "_asdict", "_fields", "_field_defaults", "_make"})

# (module, object as written, attribute): why probing for this member is fine
PROBE_ALLOWED: dict[tuple[str, str, str], str] = {
    ("harness.pytest.plugin", "config", "workerinput"):
        "pytest-xdist documents hasattr(config, 'workerinput') as how a plugin tells a "
        "worker from the controller",
    ("harness.pytest.plugin", "config.option", "dist"):
        "pytest-xdist's --dist option exists only when the optional xdist plugin is installed",
    ("harness.pytest.allure", "config.option", "allure_report_dir"):
        "allure-pytest's option exists only when the optional allure-pytest is installed",
}


@dataclass(frozen=True, order=True)
class Violation:
    path: str
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: [{self.rule}] {self.message}"


@dataclass(frozen=True)
class Edge:
    source: str  # module importing
    target: str  # harness module imported, or a library's dotted name
    path: str
    line: int


@dataclass
class Module:
    name: str
    path: str  # relative to the tree's root, for messages
    tree: ast.Module
    lines: int
    imports: list[Edge] = field(default_factory=list)


# ----------------------------------------------------------------------------- scanning
def module_name(rel: Path) -> str:
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(name: str) -> str | None:
    parts = name.split(".")
    if len(parts) == 1:
        return "api"
    if parts[1] in ("__main__", "cli"):
        return "cli"
    if parts[1:3] == ["nodes", "remote"]:
        return "remote"
    return parts[1] if parts[1] in LAYERS else None


class Tree:
    """Every module of one package (``package`` under ``root``) and its imports."""

    def __init__(self, root: Path, package: str = "harness") -> None:
        self.root = root
        self.package = package
        self.modules: dict[str, Module] = {}
        for file in sorted((root / package).rglob("*.py")):
            rel = file.relative_to(root)
            if any(rel.as_posix().startswith(e) for e in EXCLUDED):
                continue
            text = file.read_text(encoding="utf-8")
            name = module_name(rel)
            self.modules[name] = Module(name, rel.as_posix(), ast.parse(text, str(rel)),
                                        len(text.splitlines()))
        for mod in self.modules.values():
            mod.imports = list(self._imports(mod))

    def _imports(self, mod: Module) -> list[Edge]:
        is_package = mod.path.endswith("__init__.py")
        edges: dict[tuple[str, int], Edge] = {}
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    edges[alias.name, node.lineno] = Edge(mod.name, alias.name, mod.path,
                                                          node.lineno)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = mod.name.split(".")
                    anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    target = sub if sub in self.modules else base
                    edges[target, node.lineno] = Edge(mod.name, target, mod.path, node.lineno)
        return sorted(edges.values(), key=lambda e: (e.line, e.target))

    def internal(self, edge: Edge) -> bool:
        return edge.target == self.package or edge.target.startswith(self.package + ".")


# ----------------------------------------------------------------------------- rules
def check_layers(tree: Tree) -> list[Violation]:
    out = []
    for mod in tree.modules.values():
        mine = layer_of(mod.name)
        if mine is None:
            out.append(Violation(mod.path, 1, "layers", f"{mod.name} is in no layer: put it "
                                 f"under one of {', '.join(sorted(LAYERS))} (or add a layer "
                                 "to LAYERS here and to ARCHITECTURE.md)"))
            continue
        for edge in mod.imports:
            if not tree.internal(edge):
                continue
            theirs = layer_of(edge.target)
            if theirs == "remote" and mine != "remote":
                theirs = "nodes"  # nodes/remote/ is the stdlib-only part of nodes/
            if theirs is None or theirs == mine or theirs in ANYONE_MAY_IMPORT \
                    or theirs in LAYERS[mine]:
                continue
            allowed = ", ".join(sorted(LAYERS[mine])) or "nothing else from harness"
            out.append(Violation(
                edge.path, edge.line, "layers",
                f"{mine} imports {edge.target} ({theirs}); {mine} may import {allowed}. "
                f"Fix: move what both need down to a layer both may import (core/ or nodes/), "
                f"or have a layer above both pass it in"))
    return out


def check_cycles(tree: Tree) -> list[Violation]:
    graph: dict[str, dict[str, Edge]] = {m: {} for m in tree.modules}
    for mod in tree.modules.values():
        for edge in mod.imports:
            if edge.target in graph and edge.target != mod.name:
                graph[mod.name].setdefault(edge.target, edge)
    out = []
    for component in strongly_connected(graph):
        if len(component) < 2:
            continue
        start = min(component)
        path = shortest_cycle(graph, start, component)
        steps = [graph[a][b] for a, b in itertools.pairwise(path)]
        where = " -> ".join(f"{e.source} ({e.path}:{e.line})" for e in steps) + f" -> {start}"
        first = steps[0]
        out.append(Violation(
            first.path, first.line, "cycles",
            f"import cycle of {len(component)} module(s) ({', '.join(sorted(component))}): "
            f"{where}. Fix: move what they share into a module both import, or import in "
            "one direction only"))
    return out


def strongly_connected(graph: dict[str, dict[str, Edge]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative (deterministic: nodes and edges sorted)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.add(top)
                    if top == node:
                        break
                result.append(component)
    return result


def shortest_cycle(graph: dict[str, dict[str, Edge]], start: str, within: set[str]) -> list[str]:
    """start -> ... -> start, shortest (breadth first inside the component)."""
    came: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node]):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(came[path[-1]])
                return [*reversed(path), start]
            if child in within and child not in came:
                came[child] = node
                queue.append(child)
    raise AssertionError(f"{start} is in a component without a cycle")  # pragma: no cover


def check_pytest_imports(tree: Tree) -> list[Violation]:
    out = []
    for mod in tree.modules.values():
        if layer_of(mod.name) == "pytest":
            continue
        for edge in mod.imports:
            if edge.target.split(".")[0] in PYTEST_PLUMBING:
                out.append(Violation(
                    edge.path, edge.line, "pytest",
                    f"{mod.name} imports {edge.target}: only harness/pytest/ imports pytest. "
                    "Fix: move the pytest-facing part into harness/pytest/ (the CLI's `run` "
                    "goes through harness/pytest/runner.py)"))
    return out


def defined_private_names(tree: ast.Module) -> set[str]:
    """The underscored names a module defines itself: functions, classes, module and class
    variables, ``self._x``/``cls._x`` attributes, ``__slots__`` entries, import aliases."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) \
                and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            names.add(node.attr)
        elif isinstance(node, ast.alias) and node.asname:
            names.add(node.asname)
        elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets):
            names |= {c.value for c in ast.walk(node.value)
                      if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    return {n for n in names if n.startswith("_")}


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name != "_"


def check_private_names(tree: Tree, used: set[tuple[str, str, str]] | None = None
                        ) -> list[Violation]:
    out = []
    fix = ("Fix: give it a public name in its home module (and use that), or add what you "
           "need to the library's public API use; an exception goes in PRIVATE_ALLOWED in "
           "tests/unit/test_architecture.py with its reason")
    for mod in tree.modules.values():
        own = defined_private_names(mod.tree)
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""]
                for dotted in names:
                    bad = [p for p in dotted.split(".") if private(p)]
                    if bad:
                        out.append(Violation(mod.path, node.lineno, "private",
                                             f"imports the private module {dotted}. {fix}"))
                if isinstance(node, ast.ImportFrom):
                    for alias in node.names:
                        if private(alias.name):
                            out.append(Violation(
                                mod.path, node.lineno, "private",
                                f"imports the private name {alias.name} from "
                                f"{node.module or '.'}. {fix}"))
            elif isinstance(node, ast.Attribute) and private(node.attr) \
                    and node.attr not in own and node.attr not in NAMEDTUPLE_API \
                    and ast.unparse(node.value) not in INHERITED:
                key = (mod.name, ast.unparse(node.value), node.attr)
                if key in PRIVATE_ALLOWED:
                    if used is not None:
                        used.add(key)
                    continue
                out.append(Violation(
                    mod.path, node.lineno, "private",
                    f"{key[1]}.{node.attr}: {node.attr} is not defined in {mod.name}, so it "
                    f"is another module's (or a library's) private name. {fix}"))
    return out


def check_size(tree: Tree) -> list[Violation]:
    return [Violation(m.path, m.lines, "size",
                      f"{m.name} has {m.lines} lines (over {MAX_LINES}): a module this long "
                      "does two jobs. Fix: split it along a seam into modules of one job each")
            for m in tree.modules.values() if m.lines > MAX_LINES]


def namespace_params(tree: ast.Module) -> dict[int, set[str]]:
    """id(call node) -> the names of the enclosing function's argparse.Namespace parameters."""
    out: dict[int, set[str]] = {}

    def visit(node: ast.AST, names: set[str]) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            params = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
            names = names | {p.arg for p in params if p.annotation is not None and
                             ast.unparse(p.annotation) in ("argparse.Namespace", "Namespace")}
        if isinstance(node, ast.Call):
            out[id(node)] = names
        for child in ast.iter_child_nodes(node):
            visit(child, names)

    visit(tree, set())
    return out


def check_probing(tree: Tree, used: set[tuple[str, str, str]] | None = None) -> list[Violation]:
    out = []
    for mod in tree.modules.values():
        namespaces = namespace_params(mod.tree)
        for node in ast.walk(mod.tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2
                    and isinstance(node.args[1], ast.Constant)
                    and isinstance(node.args[1].value, str)):
                continue
            obj = ast.unparse(node.args[0])
            if obj in namespaces.get(id(node), set()):
                continue  # an argparse.Namespace: options differ per subcommand
            key = (mod.name, obj, node.args[1].value)
            if key in PROBE_ALLOWED:
                if used is not None:
                    used.add(key)
                continue
            out.append(Violation(
                mod.path, node.lineno, "probing",
                f"{node.func.id}({obj}, {node.args[1].value!r}) probes for a member. Fix: "
                "declare the member on the protocol (with its default in SensorBase/"
                "TargetBase) and use it directly, or test the type with isinstance; a "
                "library's optional member goes in PROBE_ALLOWED in "
                "tests/unit/test_architecture.py with its reason"))
    return out


def check_remote_stdlib(tree: Tree) -> list[Violation]:
    out = []
    for mod in tree.modules.values():
        if layer_of(mod.name) != "remote":
            continue
        for edge in mod.imports:
            top = edge.target.split(".")[0]
            if top in sys.stdlib_module_names or top == "__future__" or (
                    tree.internal(edge) and layer_of(edge.target) == "remote"):
                continue
            out.append(Violation(
                edge.path, edge.line, "remote",
                f"{mod.name} imports {edge.target}: programs in nodes/remote/ are shipped to "
                "nodes and run by a bare python3 -S, so they import only the standard library. "
                "Fix: use the standard library, or do the work on the harness's side"))
    return out


# ----------------------------------------------------------------------------- the real tree
@functools.cache
def harness() -> Tree:
    return Tree(ROOT)


def failures(violations: list[Violation]) -> str:
    return f"{len(violations)} violation(s):\n" + "\n".join(map(str, sorted(violations)))


def test_layers() -> None:
    found = check_layers(harness())
    assert not found, failures(found)


def test_no_import_cycles() -> None:
    found = check_cycles(harness())
    assert not found, failures(found)


def test_only_harness_pytest_imports_pytest() -> None:
    found = check_pytest_imports(harness())
    assert not found, failures(found)


def test_no_private_names_of_other_modules() -> None:
    used: set[tuple[str, str, str]] = set()
    found = check_private_names(harness(), used)
    stale = [Violation("tests/unit/test_architecture.py", 1, "private",
                       f"PRIVATE_ALLOWED entry {key} matches nothing any more: remove it")
             for key in sorted(set(PRIVATE_ALLOWED) - used)]
    assert not found + stale, failures(found + stale)


def test_module_size() -> None:
    found = check_size(harness())
    assert not found, failures(found)


def test_no_getattr_probing() -> None:
    used: set[tuple[str, str, str]] = set()
    found = check_probing(harness(), used)
    stale = [Violation("tests/unit/test_architecture.py", 1, "probing",
                       f"PROBE_ALLOWED entry {key} matches nothing any more: remove it")
             for key in sorted(set(PROBE_ALLOWED) - used)]
    assert not found + stale, failures(found + stale)


def test_remote_programs_import_only_the_standard_library() -> None:
    found = check_remote_stdlib(harness())
    assert not found, failures(found)


def test_every_module_is_scanned() -> None:
    tree = harness()
    assert "harness.core.verdict" in tree.modules
    assert "harness.pytest.plugin" in tree.modules
    assert not any(m.path.startswith(EXCLUDED) for m in tree.modules.values())
    assert sum(len(m.imports) for m in tree.modules.values()) > 100


# ----------------------------------------------------------------------------- the checkers
SAMPLE = {
    "pkg/__init__.py": "",
    "pkg/core/__init__.py": "",
    "pkg/core/a.py": "def f():\n    from pkg.sensors import s  # lazy: counts\n",
    "pkg/core/b.py": "from pkg.core import c\n",
    "pkg/core/c.py": "from . import b\n",  # b <-> c
    "pkg/nodes/__init__.py": "",
    "pkg/nodes/remote/__init__.py": "",
    "pkg/nodes/remote/prog.py": "import os\nimport yaml\n",
    "pkg/sensors/__init__.py": "",
    "pkg/sensors/s.py": (
        "import argparse\nimport pytest\nfrom pkg.core.c import _hidden\nfrom pkg.core import b\n"
        "class S:\n    def __init__(self):\n        self._mine = 1\n"
        "    def m(self, other, args: argparse.Namespace):\n"
        "        getattr(args, 'config', None)\n"
        "        return self._mine + other._mine + b._theirs + getattr(other, 'rules', None)\n"),
    "pkg/pytest/__init__.py": "import pytest\n",
    "pkg/big.py": "x = 1\n" * (MAX_LINES + 1),
}


@pytest.fixture
def sample(tmp_path: Path) -> Tree:
    for rel, text in SAMPLE.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return Tree(tmp_path, "pkg")


def test_checkers_find_each_kind_of_violation(sample: Tree) -> None:
    def lines(found: list[Violation]) -> list[str]:
        return [f"{v.path}:{v.line}" for v in sorted(found)]

    assert lines(check_layers(sample)) == ["pkg/big.py:1", "pkg/core/a.py:2"]
    assert "core imports pkg.sensors.s (sensors)" in str(check_layers(sample)[-1])
    [cycle] = check_cycles(sample)
    assert "pkg.core.b (pkg/core/b.py:1) -> pkg.core.c (pkg/core/c.py:1) -> pkg.core.b" \
        in str(cycle)
    assert lines(check_pytest_imports(sample)) == ["pkg/sensors/s.py:2"]
    private_found = sorted(check_private_names(sample))
    assert lines(private_found) == ["pkg/sensors/s.py:3", "pkg/sensors/s.py:10"]
    assert "b._theirs" in str(private_found[1])  # other._mine is defined here: not flagged
    assert lines(check_size(sample)) == [f"pkg/big.py:{MAX_LINES + 1}"]
    [probe] = check_probing(sample)
    assert "getattr(other, 'rules')" in str(probe)  # the Namespace's getattr is allowed
    assert lines(check_remote_stdlib(sample)) == ["pkg/nodes/remote/prog.py:2"]


def test_layer_of_names_every_layer() -> None:
    assert layer_of("harness") == "api"
    assert layer_of("harness.__main__") == "cli"
    assert layer_of("harness.nodes.remote.stagerunner") == "remote"
    assert layer_of("harness.nodes.shell") == "nodes"
    assert layer_of("harness.pytest.runner") == "pytest"
    assert layer_of("harness.elsewhere") is None


def test_every_package_and_its_data_ship_in_the_wheel() -> None:
    """Every package under harness/ is listed in pyproject's [tool.setuptools] packages (a
    missing one is absent from the wheel: an ImportError for users only), and every C
    source and header of a package is in its package-data (a sensor's rulepack() digests
    them; a missing one reads as no rule-pack identity)."""
    import tomllib

    root = Path(__file__).resolve().parents[2]
    setup = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {".".join(p.parent.relative_to(root).parts)
                for p in (root / "harness").rglob("__init__.py")}
    assert packages - set(setup["packages"]) == set()
    globs = setup["package-data"]["harness"]
    sources = [p.relative_to(root / "harness") for p in (root / "harness").rglob("*")
               if p.suffix in (".c", ".h", ".bt")]
    assert sources
    missing = [str(p) for p in sources if not any(p.match(g) for g in globs)]
    assert missing == []
