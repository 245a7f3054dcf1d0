"""docs/architecture.md against the tree: every module listed, pure ones free of I/O."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
KINDS = {"pure", "files", "shell"}
# What a pure core may not import: the event loop, the network, the clock, logging,
# processes and threads (docs/architecture.md, "pure").
IO_MODULES = {"asyncio", "socket", "ssl", "logging", "time", "subprocess", "threading", "selectors"}
ROW = re.compile(r"^\|[^|]*\|\s*`([^`]+\.py)`\s*\|\s*(\w+)\s*\|$")


def listed() -> dict[str, str]:
    rows: dict[str, str] = {}
    for line in DOC.read_text().splitlines():
        m = ROW.match(line.strip())
        if m:
            assert m.group(1) not in rows, f"{m.group(1)} listed twice"
            rows[m.group(1)] = m.group(2)
    return rows


def modules() -> set[str]:
    found = set()
    for top in ("spokeshare", "bench"):
        for path in (ROOT / top).rglob("*.py"):
            if path.name not in {"__init__.py", "__main__.py"}:
                found.add(path.relative_to(ROOT).as_posix())
    return found


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_every_module_is_listed_once_with_its_kind() -> None:
    rows = listed()
    assert set(rows) == modules()
    assert set(rows.values()) <= KINDS


def test_pure_modules_do_no_io() -> None:
    offenders = {
        module: sorted(imported(ROOT / module) & IO_MODULES)
        for module, kind in listed().items()
        if kind == "pure" and imported(ROOT / module) & IO_MODULES
    }
    assert offenders == {}


def test_the_check_sees_io() -> None:
    # The edge's shell imports asyncio and socket: the check would flag it as pure.
    assert {"asyncio", "socket"} <= imported(ROOT / "spokeshare" / "tunnel" / "edge.py")


def project_imports(path: Path) -> set[str]:
    """The project's modules ``path`` imports at its top level, as paths relative to
    the root (``spokeshare/tunnel/wire.py``); package ``__init__`` files are left out.
    Imports inside functions are deferred on purpose (a shell's, not the core's)."""
    found: set[str] = set()

    def add(dotted: str) -> bool:
        file = ROOT / (dotted.replace(".", "/") + ".py")
        if file.is_file():
            found.add(file.relative_to(ROOT).as_posix())
            return True
        return False

    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] not in {"spokeshare", "bench"}:
                continue
            if not add(node.module):
                for alias in node.names:
                    add(f"{node.module}.{alias.name}")
    return found


def test_pure_modules_import_no_shell() -> None:
    """A pure core that imports a shell pulls the event loop in with it."""
    rows = listed()
    offenders = {
        module: sorted(m for m in project_imports(ROOT / module) if rows.get(m) == "shell")
        for module, kind in rows.items()
        if kind == "pure"
    }
    assert {m: shells for m, shells in offenders.items() if shells} == {}
