"""Static checks over the source of ``resnest_dense``: no import cycles, no private upstream API.

Both checks parse every module with :mod:`ast` (nothing is imported), so they see imports inside
functions too: a cycle hidden behind a function-local import still ties the modules together,
breaks as soon as someone moves the import to the top, and is the usual sign of a misplaced
function.

Import graph rule. Module names are dotted (``resnest_dense.model_zoo`` is
``model_zoo/__init__.py``). An import statement in module M adds an edge M -> T for each module
T Python must have run for the statement to succeed:

* ``import a.b.c`` and ``from a.b.c import name`` (``name`` not a submodule): ``a.b.c``;
* ``from a.b import c`` with ``c`` a submodule: ``a.b.c`` (not ``a.b``);
* plus every package on the way to T whose ``__init__`` runs first (``a``, ``a.b``), except
  the packages that contain M: Python initialised them before M started, so reaching through
  them adds no edge (``resnest_dense`` in ``from ..model_zoo import x`` inside
  ``resnest_dense.engine.trainer``). A name taken from such a package itself
  (``from . import name_defined_in_init``) does need its ``__init__`` and counts.

So ``pkg/__init__.py`` importing ``pkg/mod.py`` is the edge pkg -> pkg.mod and not a cycle;
it becomes one only if ``pkg/mod.py`` takes a name from ``pkg/__init__.py`` or imports a module
that does. ``from ..model_zoo import x`` in ``resnest_dense/engine/trainer.py`` depends on
``resnest_dense.model_zoo`` (its ``__init__``), and hence on everything that ``__init__``
imports. ``importlib.import_module`` strings are not followed (the package has none).

Private API rule. No module may read an attribute whose name starts with one underscore
(``PathManager._path_handlers``) from a name bound by importing detectron2, iopath or fvcore,
import such a name (``from detectron2.x import _helper``) or call one through ``super()`` in a
subclass of an upstream class: those are not part of the upstream API and change without
notice. Attributes of instances (``self.checkpointer._x``) cannot be typed from the syntax and
are not checked. Overriding the documented extension hooks (``PathHandler._get_local_path``) is
defining methods, not reading attributes, and is allowed.
"""

import ast
import importlib.util
import textwrap
from pathlib import Path
from typing import Dict, List, NamedTuple, Set, Tuple

import pytest

PKG = "resnest_dense"
UPSTREAM = ("detectron2", "iopath", "fvcore")
# Checked without exceptions: no module of these packages may be part of any import cycle.
STRICT_PACKAGES = (PKG + ".model_zoo",)

# Import cycles elsewhere in the package that exist today, each as the set of modules of one
# strongly connected component. The test fails when a cycle appears that is not listed and when
# a listed one is gone (then delete its line), so the list is always the exact state. Today the
# package has none.
KNOWN_CYCLES: List[frozenset] = []

# Private upstream API used today, as (module, what the scan reports) -> why it is tolerated.
# Same contract as KNOWN_CYCLES: exact, and every entry gives its reason.
KNOWN_PRIVATE_USES: Dict[Tuple[str, str], str] = {
    (f"{PKG}.checkpoint.checkpointer", "super()._load_file in Checkpointer"): (
        "fvcore's documented hook for subclasses ('Can be overwritten by subclasses'), which "
        "detectron2's DetectionCheckpointer overrides too: unreadable files get a named error."
    ),
    (f"{PKG}.checkpoint.checkpointer", "super()._load_model in Checkpointer"): (
        "fvcore's hook for subclasses (overridden by DetectionCheckpointer too); the only place "
        "the incompatible keys of a load exist (fvcore only logs them)."
    ),
}


class Edge(NamedTuple):
    line: int
    in_function: bool


def package_root(package: str = PKG) -> Path:
    spec = importlib.util.find_spec(package)  # does not run the package's __init__.py
    return Path(spec.submodule_search_locations[0])


def discover(root: Path) -> Dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` file of the package at ``root``."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _ancestors(name: str) -> List[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _needed(target: str, importer: str, modules: Dict[str, Path], name_from_target: bool):
    """Modules that must run for ``importer`` to import ``target`` (see the module docstring)."""
    if target not in modules:
        raise AssertionError(f"{modules[importer]} imports {target}, which does not exist")
    initialised = set(_ancestors(importer)) | {importer}
    needed = [p for p in _ancestors(target) if p not in initialised]
    if name_from_target or target not in initialised:
        needed.append(target)
    return [m for m in needed if m != importer]


def _function_local_imports(tree: ast.AST) -> Set[int]:
    """``id`` of every import statement inside a function body."""
    local = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for child in ast.walk(node):
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    local.add(id(child))
    return local


def module_imports(name: str, modules: Dict[str, Path]) -> Dict[str, Edge]:
    """``{module of the same package: where it is first imported}`` for module ``name``."""
    top = name.split(".")[0]
    path = modules[name]
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    local = _function_local_imports(tree)
    out: Dict[str, Edge] = {}

    def add(targets, node):
        for t in targets:
            out.setdefault(t, Edge(node.lineno, id(node) in local))

    def ours(module: str) -> bool:
        return module == top or module.startswith(top + ".")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if ours(alias.name):
                    add(_needed(alias.name, name, modules, name_from_target=False), node)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = ".".join(base[: len(base) - node.level + 1])
                target = base + ("." + node.module if node.module else "")
            else:
                target = node.module or ""
            if not ours(target):
                continue
            submodules = [f"{target}.{a.name}" for a in node.names]
            for sub in submodules:
                if sub in modules:
                    add(_needed(sub, name, modules, name_from_target=False), node)
            takes_names = any(sub not in modules for sub in submodules)
            add(_needed(target, name, modules, name_from_target=takes_names), node)
    return dict(sorted(out.items()))


def import_graph(root: Path) -> Tuple[Dict[str, Dict[str, Edge]], Dict[str, Path]]:
    modules = discover(root)
    return {m: module_imports(m, modules) for m in modules}, modules


def strongly_connected(graph: Dict[str, Dict[str, Edge]]) -> List[List[str]]:
    """Tarjan's algorithm; the components that hold a cycle, each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    components = []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(components)


def describe_cycle(component: List[str], graph, modules) -> str:
    """The shortest cycle through the component's first module, each edge with file and line."""
    inside = set(component)
    start = component[0]
    parent = {start: None}
    queue = [start]
    last = None
    while last is None:
        v = queue.pop(0)
        if start in graph[v]:
            last = v
        for w in graph[v]:
            if w in inside and w not in parent:
                parent[w] = v
                queue.append(w)
    path = [last]
    while parent[path[-1]] is not None:
        path.append(parent[path[-1]])
    path = path[::-1] + [start]
    steps = []
    for a, b in zip(path, path[1:]):
        edge = graph[a][b]
        where = f"{modules[a].parent.name}/{modules[a].name}:{edge.line}"
        steps.append(f"  {a} -> {b}  ({where}{', in a function' if edge.in_function else ''})")
    return f"cycle through {component}:\n" + "\n".join(steps)


def _write_package(root: Path, files: Dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    return root / "pkg"


def test_graph_follows_the_documented_rule(tmp_path):
    """Every import form, on a synthetic package with two cycles (guards the tests below)."""
    root = _write_package(
        tmp_path,
        {
            "pkg/__init__.py": "from . import a\nfrom .b import thing\nname_in_init = 1\n",
            "pkg/a.py": """\
                from .sub.c import f
                import pkg.sub
                import os
                def g():
                    from . import d
                """,
            "pkg/b.py": "from . import name_in_init\nthing = 2\n",
            "pkg/d.py": "",
            "pkg/sub/__init__.py": "",
            "pkg/sub/c.py": "import pkg\ndef f():\n    from .. import a\n",
        },
    )
    graph, modules = import_graph(root)
    assert graph == {
        # An __init__ importing its submodules: edges to them, not to itself.
        "pkg": {"pkg.a": Edge(1, False), "pkg.b": Edge(2, False)},
        # ``from .sub.c``: sub/__init__ runs first; ``import pkg.sub`` adds nothing new;
        # the function-local import counts and says so.
        "pkg.a": {"pkg.d": Edge(5, True), "pkg.sub": Edge(1, False), "pkg.sub.c": Edge(1, False)},
        # A name from the package's own __init__ needs that __init__.
        "pkg.b": {"pkg": Edge(1, False)},
        "pkg.d": {},
        "pkg.sub": {},
        # ``import pkg`` (an ancestor, already initialised) adds nothing; ``from .. import a``
        # is the submodule.
        "pkg.sub.c": {"pkg.a": Edge(3, True)},
    }
    cycles = strongly_connected(graph)
    assert cycles == [["pkg", "pkg.b"], ["pkg.a", "pkg.sub.c"]]
    message = describe_cycle(cycles[1], graph, modules)
    assert "pkg.a -> pkg.sub.c  (pkg/a.py:1)" in message
    assert "pkg.sub.c -> pkg.a  (sub/c.py:3, in a function)" in message


@pytest.fixture(scope="module")
def graph_and_modules():
    return import_graph(package_root())


def _closure(graph, start: str) -> Set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def test_model_zoo_dependencies_run_one_way(graph_and_modules):
    """config_files and registry import no weight code; nothing of the weights imports the
    model_zoo module (which depends on the registry)."""
    graph, _ = graph_and_modules
    mz = PKG + ".model_zoo"
    weight_code = {f"{mz}.{m}" for m in ("registry", "store", "conversion", "handler")}
    forbidden = {
        "config_files": weight_code | {f"{mz}.model_zoo"},
        "registry": weight_code | {f"{mz}.model_zoo"},
        "store": {f"{mz}.conversion", f"{mz}.handler", f"{mz}.model_zoo"},
        "conversion": {f"{mz}.handler", f"{mz}.model_zoo"},
        "handler": {f"{mz}.model_zoo"},
    }
    wrong = {
        m: sorted(_closure(graph, f"{mz}.{m}") & bad)
        for m, bad in forbidden.items()
        if _closure(graph, f"{mz}.{m}") & bad
    }
    assert not wrong, f"model_zoo modules depending (directly or not) on later ones: {wrong}"


def test_model_zoo_has_no_import_cycle(graph_and_modules):
    graph, modules = graph_and_modules
    bad = [
        describe_cycle(c, graph, modules)
        for c in strongly_connected(graph)
        if any(m == p or m.startswith(p + ".") for m in c for p in STRICT_PACKAGES)
    ]
    assert not bad, "\n\n".join(bad)


def test_package_import_cycles_are_the_known_ones(graph_and_modules):
    graph, modules = graph_and_modules
    found = {frozenset(c): c for c in strongly_connected(graph)}
    new = [describe_cycle(c, graph, modules) for k, c in found.items() if k not in KNOWN_CYCLES]
    gone = [sorted(k) for k in KNOWN_CYCLES if k not in found]
    assert not new, "New import cycles:\n\n" + "\n\n".join(new)
    assert not gone, f"These cycles are gone; delete them from KNOWN_CYCLES: {gone}"


# ------------------------------------------------------------------ private upstream API


def upstream_names(tree: ast.AST) -> Set[str]:
    """Names a module binds by importing detectron2 / iopath / fvcore (or their members)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in UPSTREAM:
                    names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if node.module.split(".")[0] in UPSTREAM:
                names.update(a.asname or a.name for a in node.names)
    return names


def _is_private(attr: str) -> bool:
    return attr.startswith("_") and not attr.startswith("__")


def _attribute_chain(node: ast.AST) -> Tuple[ast.AST, List[str]]:
    attrs = []
    while isinstance(node, ast.Attribute):
        attrs.append(node.attr)
        node = node.value
    return node, attrs[::-1]


def _is_super_call(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"
    )


def private_upstream_uses(path: Path) -> List[Tuple[int, str]]:
    """``(line, what)`` of every private upstream access in one file (module docstring)."""
    tree = ast.parse(path.read_text(), str(path))
    names = upstream_names(tree)
    found = []
    # Only the outermost node of an attribute chain: ``a._b.c`` is reported once.
    inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if node.module.split(".")[0] in UPSTREAM:
                for alias in node.names:
                    if _is_private(alias.name):
                        found.append((node.lineno, f"from {node.module} import {alias.name}"))
        elif isinstance(node, ast.Attribute) and id(node) not in inner:
            root, attrs = _attribute_chain(node)
            if isinstance(root, ast.Name) and root.id in names and any(map(_is_private, attrs)):
                found.append((node.lineno, ".".join([root.id] + attrs)))
        elif isinstance(node, ast.ClassDef):
            roots = [_attribute_chain(b)[0] for b in node.bases]
            if not {r.id for r in roots if isinstance(r, ast.Name)} & names:
                continue
            for child in ast.walk(node):
                if (
                    isinstance(child, ast.Attribute)
                    and _is_super_call(child.value)
                    and _is_private(child.attr)
                ):
                    found.append((child.lineno, f"super().{child.attr} in {node.name}"))
    return sorted(set(found))


def test_private_api_scan_finds_what_it_should(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(textwrap.dedent("""\
            from detectron2.utils.file_io import PathManager
            import fvcore.common.checkpoint as fc
            from iopath.common.file_io import _private_helper
            from detectron2.checkpoint import DetectionCheckpointer
            import detectron2
            import os
            x = PathManager._path_handlers
            y = fc.Checkpointer._load_file.__name__
            z = os._exit, PathManager.register_handler, PathManager.__class__
            w = detectron2.utils._x
            class C(DetectionCheckpointer):
                def _load_model(self, c):
                    return super()._load_model(c)
            class D:
                def _f(self):
                    return super()._f()
            """))
    assert private_upstream_uses(src) == [
        (3, "from iopath.common.file_io import _private_helper"),
        (7, "PathManager._path_handlers"),
        (8, "fc.Checkpointer._load_file.__name__"),
        (10, "detectron2.utils._x"),
        (13, "super()._load_model in C"),
    ]


def test_private_upstream_uses_are_the_known_ones():
    uses = {}
    for name, path in discover(package_root()).items():
        for line, what in private_upstream_uses(path):
            uses.setdefault((name, what), f"{path.parent.name}/{path.name}:{line}")
    new = sorted(k for k in uses if k not in KNOWN_PRIVATE_USES)
    gone = sorted(k for k in KNOWN_PRIVATE_USES if k not in uses)
    assert not new, "Private detectron2/iopath/fvcore API used: " + "; ".join(
        f"{uses[k]} {k[1]}" for k in new
    )
    assert not gone, f"No longer used; delete from KNOWN_PRIVATE_USES: {gone}"
