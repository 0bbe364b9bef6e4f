"""The shape of the library, checked: no import cycle among the modules of explore/.

A cycle (a imports b, b imports ... a) makes modules impossible to read or test on their own and
forces function-local imports to dodge ImportError. The graph counts top-level AND function-local
imports (a local import still ties the two modules together) but not those under
`if TYPE_CHECKING:`, which exist only for type checkers and never run.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "explore"


def module_files() -> dict[str, Path]:
    """'explore.data.bundle' -> its file; a package is named by its __init__.py."""
    files = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        files[name] = path
    return files


def is_type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None) if isinstance(node, ast.If) else None
    return isinstance(test, (ast.Name, ast.Attribute)) and \
        getattr(test, "id", getattr(test, "attr", "")) == "TYPE_CHECKING"


def runtime_imports(tree: ast.AST):
    """Every Import / ImportFrom node, at any depth, except those inside `if TYPE_CHECKING:`."""
    for node in ast.iter_child_nodes(tree):
        if is_type_checking_block(node):
            yield from (n for child in node.orelse for n in runtime_imports(ast.Module(body=[child])))
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from runtime_imports(node)


def imported_names(node: ast.AST, package: str) -> list[str]:
    """The dotted names an import may load, relative imports resolved against `package`."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
    # `from pkg import name` loads pkg, and pkg.name when name is a submodule.
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    graph = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in runtime_imports(ast.parse(path.read_text())):
            graph[name] |= {target for target in imported_names(node, package)
                            if target in files and target != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None: depth-first search that meets a module still on its path."""
    state = {}  # name -> "open" while on the current path, "done" after

    def visit(name, path):
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                return path[path.index(target):] + [name, target]
            if target not in state and (cycle := visit(target, path + [name])):
                return cycle
        state[name] = "done"
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name, [])):
            return cycle
    return None


def test_the_graph_sees_relative_and_local_imports():
    graph = import_graph()
    assert "explore.data.bundle" in graph["explore.data"]  # `from .bundle import ...` in a package
    assert "explore.data.xrv" in graph["explore.data"]  # imported inside _load_one: the optional loader
    assert "explore.data.bundle" not in graph["explore.data.metadata"]  # only under `if TYPE_CHECKING:`


def test_find_cycle_names_the_modules():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_in_the_library():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle in explore/: " + " -> ".join(cycle)
