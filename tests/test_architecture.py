"""The package's layering, read from the source: no import cycle between modules or between packages, and the
headless client never imports the server (`anymole.service`), only what both share (`anymole.wire`,
`anymole.pipeline`). Imports inside functions count; those under ``if TYPE_CHECKING:`` do not (they never run)."""

from __future__ import annotations

import ast
from pathlib import Path

SERVER = Path(__file__).resolve().parents[1] / "server"
PACKAGE = SERVER / "anymole"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SERVER).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(p): p for p in PACKAGE.rglob("*.py") if "proto" not in p.relative_to(PACKAGE).parts[:2]
    }


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _parse(path: Path) -> ast.Module:
    """``ast.parse``, once more on CPython 3.11's spurious "AST constructor recursion depth mismatch" SystemError
    (python/cpython#106905, fixed in later 3.11 and 3.12 releases), which another thread parsing at the same time (a Ray
    test's workers, pytest's assertion rewriting) can trigger; a real syntax error still fails."""
    text = path.read_text()
    try:
        return ast.parse(text, str(path))
    except SystemError:
        return ast.parse(text, str(path))


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The `anymole` modules ``name`` imports when it runs (a name imported from a package counts as the
    package's module, or the submodule when it is one)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("anymole"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.startswith("anymole"):
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    found.add(sub if sub in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(_parse(path))
    return {m for m in found if m in known and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, name, known) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
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
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def _package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_no_module_imports_itself_back() -> None:
    assert _cycles(_graph()) == []


def test_no_package_imports_itself_back() -> None:
    packages: dict[str, set[str]] = {}
    for module, imports in _graph().items():
        packages.setdefault(_package_of(module), set()).update(
            _package_of(m) for m in imports if _package_of(m) != _package_of(module)
        )
    assert _cycles(packages) == []


def test_the_client_never_imports_the_server() -> None:
    graph = _graph()
    client = [m for m in graph if m == "anymole.client" or m.startswith("anymole.client.")]
    assert client
    reached: set[str] = set()
    todo = list(client)
    while todo:  # everything the client's modules import, transitively
        for m in graph[todo.pop()]:
            if m not in reached:
                reached.add(m)
                todo.append(m)
    assert sorted(m for m in reached if m.startswith("anymole.service")) == []


def test_the_checks_see_a_cycle_and_a_server_import() -> None:
    """The helpers find what they are for (so that the tests above can fail)."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = _graph()
    assert "anymole.wire.convert" in graph["anymole.service.servicer"]
    assert "anymole.pipeline" in graph["anymole.client._client"]
