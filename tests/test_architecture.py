"""The package's layers, read from its imports (function-local ones included): no cycle, no import upwards.

From the bottom: errors and files; model and data (neither imports the other); the trainers;
settings, config and the registry; quick_start; experiments and serve (neither imports the other).
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "recbole_micro"

LAYERS = {  # module-name prefix -> rank; a module may import only ranks at or below its own
    "recbole_micro": 0, "recbole_micro.errors": 0, "recbole_micro.files": 0,
    "recbole_micro.model": 1, "recbole_micro.data": 1,
    "recbole_micro.trainer": 2,
    "recbole_micro.settings": 3, "recbole_micro.registry": 3, "recbole_micro.config": 3,
    "recbole_micro.quick_start": 4,
    "recbole_micro.experiments": 5, "recbole_micro.serve": 5,
}
SIBLINGS_APART = [("recbole_micro.model", "recbole_micro.data"), ("recbole_micro.experiments", "recbole_micro.serve")]
MAX_ROOT_MODULES = 8


def module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules():
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path, modules):
    """The package modules that ``path`` imports anywhere in it (``from a import b`` counts a.b when b is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "recbole_micro")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "recbole_micro":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    return found


def import_graph():
    modules = package_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def layer_of(module):
    prefix = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return prefix, LAYERS[prefix]


def find_cycle(graph):
    """One import cycle of ``graph`` ({module: imported modules}) as a list that starts and ends at the same module, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_through_several_modules_and_none_in_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"d"}, "d": {"b"}}) == ["b", "c", "d", "b"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_function_local_imports_count(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from recbole_micro.config import Config\n    import recbole_micro.serve.export\n")
    assert imports_of(source, {"recbole_micro.config", "recbole_micro.serve.export"}) == {
        "recbole_micro.config", "recbole_micro.serve.export"}


def test_the_package_has_no_import_cycle():
    assert find_cycle(import_graph()) is None


@pytest.mark.parametrize("module", sorted(package_modules()))
def test_each_module_imports_only_its_own_layer_or_lower(module):
    (prefix, rank), graph = layer_of(module), import_graph()
    upward = [m for m in graph[module] if layer_of(m)[1] > rank]
    assert not upward, f"{module} (layer {rank}) imports a higher layer: {upward}"
    for a, b in SIBLINGS_APART:
        for mine, other in ((a, b), (b, a)):
            if prefix == mine:
                crossing = [m for m in graph[module] if layer_of(m)[0] == other]
                assert not crossing, f"{module} imports {crossing}: {mine} and {other} stay apart"


def test_every_module_has_a_layer_and_the_root_stays_small():
    assert all(layer_of(m) for m in package_modules())
    root = [p.name for p in PACKAGE.glob("*.py")]
    assert len(root) <= MAX_ROOT_MODULES, root
    for folder in ("model", "data", "trainer", "experiments", "serve"):
        assert (PACKAGE / folder / "__init__.py").is_file(), folder
