"""The shape of the code: no import circle in `relay`, and front ends that go through the operations layer.

The graph counts every import a module can run, function-level ones included (a lazy import that closes a
circle still ties the two modules together); only `if TYPE_CHECKING:` blocks are left out, they never run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "relay"
# The front ends: they parse, call `relay.ops` and render.
FRONT_ENDS = ("relay.cli", "relay.http.admin", "relay.console.routes")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text(encoding="utf-8")) for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, except those under `if TYPE_CHECKING:`."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.If) and _is_type_checking(child):
            yield from (n for stmt in child.orelse for n in (stmt, *_runtime_nodes(stmt)))
            continue
        yield child
        yield from _runtime_nodes(child)


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def import_graph() -> dict[str, set[str]]:
    """Module → the `relay` modules it imports (a `from pkg import sub` names the submodule when it is one)."""
    modules = _modules()
    packages = {name for name in modules if (PACKAGE_DIR.parent / name.replace(".", "/") / "__init__.py").exists()}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, tree in modules.items():
        for node in _runtime_nodes(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, node, name in packages)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({"a": {"b"}, "b": set()}, None),
        ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": {"b"}}, ["b", "c", "b"]),
        ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, None),
    ],
)
def test_find_cycle(graph: dict[str, set[str]], cycle: list[str] | None) -> None:
    assert find_cycle(graph) == cycle


def test_function_level_imports_count() -> None:
    tree = ast.parse("def f():\n    from relay.cli import main\nif TYPE_CHECKING:\n    import relay.daemon\n")
    imported = [n for n in _runtime_nodes(tree) if isinstance(n, ast.ImportFrom | ast.Import)]
    assert [getattr(n, "module", None) for n in imported] == ["relay.cli"]


def test_the_relay_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "relay.ops" in graph["relay.cli"]  # the graph sees the front ends' imports at all
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_lower_layers_do_not_import_higher_ones() -> None:
    graph = import_graph()
    for low in ("relay.config", "relay.signing", "relay.guard", "relay.routing", "relay.events", "relay.store.base"):
        reached = _reachable(graph, low)
        climbing = sorted(
            m for m in reached if m.startswith(("relay.deliver", "relay.ingest", "relay.http", "relay.cli"))
        )
        assert not climbing, f"{low} reaches {climbing}"


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _is_store(node: ast.expr) -> bool:
    """`store`, `x.store`, `self.store`: what a front end must reach through relay.ops instead."""
    return (isinstance(node, ast.Name) and node.id == "store") or (
        isinstance(node, ast.Attribute) and node.attr == "store"
    )


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_front_ends_go_through_the_operations_layer(front_end: str) -> None:
    tree = _modules()[front_end]
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module is not None
    } | {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {m for m in imported if m.startswith(("relay.store", "relay.deliver.replay", "relay.ingest.requeue"))}
    assert not {m for m in imported if m in ("sqlite3", "aiosqlite")}
    calls = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and _is_store(node.func.value)
    }
    assert not calls, f"{front_end} calls the store itself: {sorted(calls)}"
    sql = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and any(word in node.value.upper() for word in ("SELECT ", "UPDATE ", "INSERT INTO", "DELETE FROM"))
    ]
    assert not sql, f"{front_end} holds SQL: {sql[:1]}"
    others = [m for m in FRONT_ENDS if m != front_end]
    assert not imported & set(others), f"{front_end} imports another front end"
