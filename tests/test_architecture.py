"""The shape of the code: no import cycles between clipgauge modules, no overlong functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "clipgauge"
MAX_FUNCTION_LINES = 80
LONG_MARKER = "# long:"  # a comment just above a longer function, saying why it is long


def module_names() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str:
    """The module that `import name` runs last: `name` itself, else its nearest package."""
    while name not in modules:
        name = name.rpartition(".")[0]
    return name


def import_graph() -> dict[str, set[str]]:
    """clipgauge module -> clipgauge modules it imports anywhere (inside functions too)."""
    modules = module_names()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" for a in node.names]
                targets = [t if t in modules else base for t in targets]
            else:
                continue
            deps.update(_resolve(t, modules) for t in targets if t.startswith("clipgauge"))
        deps.discard(name)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same graph between clipgauge's subpackages and top-level modules."""

    def unit(name: str) -> str:
        return ".".join(name.split(".")[:2])

    out: dict[str, set[str]] = {}
    for name, deps in graph.items():
        out.setdefault(unit(name), set()).update(unit(d) for d in deps if unit(d) != unit(name))
    out.get("clipgauge", set()).clear()  # the root package only holds __version__
    return out


def test_find_cycle_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_import_graph_sees_imports_inside_functions():
    graph = import_graph()
    # cli/measure.py imports clipgauge.task_measures only inside cmd_measure
    assert "clipgauge.task_measures" in graph["clipgauge.cli.measure"]
    assert "clipgauge.cli.options" in graph["clipgauge.cli.training"]


def test_no_import_cycle_between_modules():
    assert find_cycle(import_graph()) is None


def test_no_import_cycle_between_subpackages():
    assert find_cycle(package_graph(import_graph())) is None


@pytest.mark.parametrize(
    ("low", "high"),
    [
        ("clipgauge.data", "clipgauge.world"),
        ("clipgauge.prompts", "clipgauge.world"),
        ("clipgauge.methods", "clipgauge.training"),
        ("clipgauge.training", "clipgauge.study"),
        ("clipgauge.analysis", "clipgauge.study"),
        ("clipgauge.analysis", "clipgauge.report"),
    ],
)
def test_data_flows_one_way(low, high):
    assert high not in package_graph(import_graph())[low]


def test_nothing_but_the_cli_imports_the_cli():
    graph = package_graph(import_graph())
    users = sorted(n for n, deps in graph.items() if "clipgauge.cli" in deps)
    assert users == ["clipgauge.__main__"]


def overlong_functions() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            length = node.end_lineno - node.lineno + 1
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            comments = []  # the comment block right above the function
            row = first - 2
            while row >= 0 and lines[row].strip().startswith("#"):
                comments.append(lines[row].strip())
                row -= 1
            says_why = any(c.startswith(LONG_MARKER) for c in comments)
            if length > MAX_FUNCTION_LINES and not says_why:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({length})")
    return found


def test_functions_are_short_or_say_why():
    assert overlong_functions() == []
