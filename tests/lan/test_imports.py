"""No import cycle through the LAN modules: every import statement, read with ``ast``.

Every import counts, also those inside functions and under ``TYPE_CHECKING``: a lazy
import only hides a cycle from the interpreter (discovery_service <-> mdns was one,
through ``DiscoverySettings`` living in a shell module).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "spokeshare"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, source: str, known: Iterable[str]) -> set[str]:
    """The package's modules ``source`` (module ``name``) imports, anywhere in it."""
    known = set(known)
    package = name if source_is_package(name, known) else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            subs = {f"{base}.{a.name}" for a in node.names} & known
            out.update(subs or ({base} & known))
    out.discard(name)
    return out


def source_is_package(name: str, known: set[str]) -> bool:
    return any(k.startswith(name + ".") for k in known)


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def package_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path.read_text(), mods) for name, path in mods.items()}


def test_no_import_cycle_through_a_lan_module() -> None:
    graph = package_graph()
    assert "spokeshare.lan.mdns" in graph and "spokeshare.config" in graph
    lan = [c for c in cycles(graph) if any(m.startswith("spokeshare.lan.") for m in c)]
    assert lan == []


def test_the_checker_finds_a_lazy_and_a_type_checking_cycle() -> None:
    """The old cycle, as source: a function-level import one way, TYPE_CHECKING back."""
    known = {"spokeshare.lan.a", "spokeshare.lan.b", "spokeshare.lan"}
    a = "def f():\n    from spokeshare.lan.b import B\n"
    b = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n"
    graph = {
        "spokeshare.lan.a": imports_of("spokeshare.lan.a", a, known),
        "spokeshare.lan.b": imports_of("spokeshare.lan.b", b, known),
    }
    assert graph == {
        "spokeshare.lan.a": {"spokeshare.lan.b"},
        "spokeshare.lan.b": {"spokeshare.lan.a"},
    }
    assert cycles(graph) == [["spokeshare.lan.a", "spokeshare.lan.b"]]


def test_discovery_settings_import_no_shell() -> None:
    """The settings the shells share import none of them."""
    graph = package_graph()
    shells = {"spokeshare.lan.discovery_service", "spokeshare.lan.mdns"}
    assert not graph["spokeshare.lan.discovery_settings"] & shells
