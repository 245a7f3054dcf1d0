"""The operator's log lines: every event in spokeshare.logevents reads back with
spokeshare.logfmt's parser with its fields, every line the package writes is one of
them with the fields its row allows, and README's "Log lines" lists exactly them."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest

from spokeshare import logevents, logfmt
from spokeshare.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "spokeshare"

# Values an operator's grep must get back exactly: spaces, quotes, '=', a backslash, a
# newline, an empty value, LAN names as each protocol spells them.
AWKWARD = ["GLOBAL-NFS<20>", 'no service "x"', "a=b c", "back\\slash", "two\nlines", "",
           "198.18.11.10:50122", "ok"]  # fmt: skip


@pytest.mark.parametrize("event", logevents.EVENTS, ids=lambda e: e.name)
def test_every_event_reads_back_with_its_fields(event: logevents.Event) -> None:
    for i in range(len(AWKWARD)):
        values = {k: AWKWARD[(i + j) % len(AWKWARD)] for j, k in enumerate(event.fields)}
        text = str(logfmt.Line(event.name, **values))
        assert "\n" not in text
        name, fields = logfmt.parse(text)
        assert name == event.name
        assert fields == values
    # Only the required fields (the others left out: None).
    only = {k: (1 if k.endswith("_s") else "x") for k in event.required}
    name, fields = logfmt.parse(str(logfmt.Line(event.name, **only)))
    assert (name, list(fields)) == (event.name, list(event.required))


def test_event_names_are_distinct_and_none_is_a_prefix_of_another() -> None:
    """``grep 'name conflict '`` must not also find another event's lines."""
    names = [e.name for e in logevents.EVENTS]
    assert len(set(names)) == len(names)
    for a in names:
        for b in names:
            assert a == b or not b.startswith(a + " "), (a, b)


# -- every line the package writes ---------------------------------------------------


def _string_constants(tree: ast.Module) -> dict[str, str]:
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name) and isinstance(node.value.value, str):
                    out[target.id] = node.value.value
    return out


def _calls() -> list[tuple[str, str, set[str]]]:
    """(where, event, field names) of every ``Line(...)`` and ``logfmt(...)`` call in the
    package (not logfmt.py itself, which defines them)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "logfmt.py":
            continue
        tree = ast.parse(path.read_text(), str(path))
        constants = _string_constants(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            fname = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if fname not in ("Line", "logfmt") or not node.args:
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                event = first.value
            elif isinstance(first, ast.Name) and first.id in constants:
                event = constants[first.id]
            else:
                raise AssertionError(f"{where}: the event is not a string constant")
            keys: set[str] = set()
            for kw in node.keywords:
                if kw.arg is not None:
                    keys.add(kw.arg)
                elif isinstance(kw.value, ast.Dict) and all(
                    isinstance(k, ast.Constant) and isinstance(k.value, str) for k in kw.value.keys
                ):
                    keys |= {str(k.value) for k in kw.value.keys if isinstance(k, ast.Constant)}
                else:
                    raise AssertionError(f"{where}: fields given as **something not literal")
            found.append((where, event, keys))
    return found


CALLS = _calls()


def test_every_line_written_is_a_listed_event_with_its_fields() -> None:
    for where, event, keys in CALLS:
        assert event in logevents.BY_NAME, f"{where}: {event!r} is not in logevents.EVENTS"
        spec = logevents.BY_NAME[event]
        assert keys <= set(spec.fields), f"{where}: {event}: {keys - set(spec.fields)}"
        # A None value leaves a field out at run time; a required one is always given.
        assert set(spec.required) <= keys, f"{where}: {event}: no {set(spec.required) - keys}"


def test_every_listed_event_is_written_somewhere() -> None:
    written = {event for _, event, _ in CALLS}
    assert written == {e.name for e in logevents.EVENTS}


# -- README ---------------------------------------------------------------------------


def _readme_events() -> dict[str, tuple[str, ...]]:
    """README's "Log lines" events table: {event: its fields in order}."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Log lines", 1)[1].split("\n### ", 1)[0]
    table = section.split("| event | side | fields | what it means, what to do |", 1)[1]
    rows: dict[str, tuple[str, ...]] = {}
    for line in table.split("\n\n", 1)[0].splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        event = cells[0].strip("`")
        fields = tuple(f.strip("`") for f in cells[2].replace(",", " ").split())
        assert event not in rows, event
        rows[event] = fields
    return rows


def test_readme_lists_every_event_with_its_fields() -> None:
    readme = _readme_events()
    assert readme == {e.name: e.fields for e in logevents.EVENTS}
    assert list(readme) == [e.name for e in logevents.EVENTS]  # in the same order


# -- no prose at INFO and above --------------------------------------------------------

#: Logger methods and the level each writes at (``log`` takes the level first).
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40,
           "exception": 40, "critical": 50}  # fmt: skip
#: The lab (``spokeshare lab``, the demo's network) is a test bench on one machine, not
#: a deployment: its lines are for the developer watching it and stay prose.
_NOT_DEPLOYED = ("spokeshare/lab/",)


def _level(node: ast.expr) -> int | None:
    """``logging.INFO`` and the like as a number; None for a level chosen at run time."""
    if isinstance(node, ast.Attribute) and ast.unparse(node.value) == "logging":
        level = getattr(logging, node.attr, None)
        return level if isinstance(level, int) else None
    return None


def _is_line(node: ast.expr) -> bool:
    """A ``Line(...)`` or ``logfmt(...)`` call."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)) in (
        "Line", "logfmt")  # fmt: skip


def _last_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _annotation_is(node: ast.expr | None, *names: str) -> bool:
    return node is not None and ast.unparse(node).split(".")[-1].strip("'\"") in names


class _Scan(ast.NodeVisitor):
    """Every log call of one module, in ``found``: (line number, level or None when it
    is chosen at run time, whether the message is a line of an event)."""

    def __init__(self, tree: ast.Module, line_functions: set[str]) -> None:
        self.line_functions = line_functions
        self.loggers: set[str] = set()  # names and attributes holding a logging.Logger
        self.limited: set[str] = set()  # ... holding a lan.hostile.RateLimitedLog
        for node in ast.walk(tree):
            self._note_holders(node)
        self.found: list[tuple[int, int | None, bool]] = []
        self._params: list[dict[str, ast.expr | None]] = [{}]
        self._loop_lines: list[set[str]] = [set()]
        self.visit(tree)

    def _note_holders(self, node: ast.AST) -> None:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = node.value
            kind = None
            if isinstance(value, ast.Call) and ast.unparse(value.func) in (
                "logging.getLogger", "logging.LoggerAdapter"):  # fmt: skip
                kind = self.loggers
            elif isinstance(value, ast.Call) and _last_name(value.func) == "RateLimitedLog":
                kind = self.limited
            elif isinstance(node, ast.AnnAssign) and _annotation_is(node.annotation, "Logger"):
                kind = self.loggers
            elif isinstance(node, ast.AnnAssign) and _annotation_is(
                node.annotation, "RateLimitedLog"):  # fmt: skip
                kind = self.limited
            if kind is not None:
                kind.update(n for t in targets if (n := _last_name(t)) is not None)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            logger_params = {
                a.arg for a in node.args.args if _annotation_is(a.annotation, "Logger")
            }
            for sub in ast.walk(node):  # self.x = logger
                if isinstance(sub, ast.Assign) and isinstance(sub.value, ast.Name) and (
                        sub.value.id in logger_params):  # fmt: skip
                    self.loggers.update(n for t in sub.targets if (n := _last_name(t)))
            limited_params = {a.arg for a in node.args.args
                              if _annotation_is(a.annotation, "RateLimitedLog")}  # fmt: skip
            self.limited |= limited_params

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._params.append({a.arg: a.annotation for a in node.args.args})
        self._loop_lines.append(set())
        self.generic_visit(node)
        self._params.pop()
        self._loop_lines.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # noqa: N815

    def visit_For(self, node: ast.For) -> None:
        # ``for level, message in cmds.logs``: a pure core's lines, checked where they
        # are made (``.logs.append``, below).
        if isinstance(node.iter, ast.Attribute) and node.iter.attr == "logs":
            self._loop_lines[-1] |= {n.id for n in ast.walk(node.target)
                                     if isinstance(n, ast.Name)}  # fmt: skip
        self.generic_visit(node)

    def _is_logger(self, node: ast.expr) -> bool:
        """A logger: a name or attribute holding one, ``logging`` itself (the root
        logger) or ``logging.getLogger(...)``."""
        text = ast.unparse(node)
        return (_last_name(node) in self.loggers or text == "logging"
                or text.startswith("logging.getLogger("))  # fmt: skip

    def _structured(self, args: list[ast.expr]) -> bool:
        """The message is a Line: ``Line(...)``/``logfmt(...)``, or ``"%s"`` with one
        argument that is one, a call of a function that returns one, a parameter
        annotated ``Line``, or a line handed over by a pure core."""
        if not args:
            return False
        if _is_line(args[0]):
            return True
        if not (isinstance(args[0], ast.Constant) and args[0].value == "%s" and len(args) == 2):
            return False
        arg = args[1]
        if _is_line(arg):
            return True
        if isinstance(arg, ast.Call) and _last_name(arg.func) in self.line_functions:
            return True
        if isinstance(arg, ast.Name):
            return _annotation_is(self._params[-1].get(arg.id), "Line") or (
                arg.id in self._loop_lines[-1]
            )
        return False

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = _last_name(func)
        owner = func.value if isinstance(func, ast.Attribute) else None
        keywords = {k.arg: k.value for k in node.keywords}
        if owner is not None and name in (*_LEVELS, "log") and self._is_logger(owner):
            args = list(node.args)
            if name == "log":
                level = _level(args.pop(0))
            else:
                level = _LEVELS[name]
            self.found.append((node.lineno, level, self._structured(args)))
        elif name in self.limited:
            # RateLimitedLog(what, key, msg, *args, level=DEBUG)
            level_expr = keywords.get("level")
            level = logging.DEBUG if level_expr is None else _level(level_expr)
            self.found.append((node.lineno, level, self._structured(list(node.args[2:]))))
        elif name == "append" and isinstance(owner, ast.Attribute) and owner.attr == "logs":
            # A pure core's (level, line) for its adapter to log.
            [item] = node.args
            assert isinstance(item, ast.Tuple) and isinstance(item.elts[0], ast.Constant)
            level = _LEVELS[str(item.elts[0].value)]
            msg = item.elts[1]
            ok = _is_line(msg) or (
                isinstance(msg, ast.Call) and _last_name(msg.func) in self.line_functions
            )
            self.found.append((node.lineno, level, ok))
        self.generic_visit(node)


def _line_functions(trees: dict[Path, ast.Module]) -> set[str]:
    """Functions of the package that return a line: annotated ``-> Line``, or whose every
    ``return`` is a ``Line(...)``/``logfmt(...)`` call."""
    out = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                returns = [r.value for r in ast.walk(node) if isinstance(r, ast.Return)]
                if _annotation_is(node.returns, "Line") or (
                    returns and all(r is not None and _is_line(r) for r in returns)
                ):
                    out.add(node.name)
    return out


def _log_calls() -> list[tuple[str, int | None, bool]]:
    """(where, level, structured) of every log call in the deployed package."""
    trees = {p: ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}
    line_functions = _line_functions(trees)
    out = []
    for path, tree in trees.items():
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(_NOT_DEPLOYED) or path.name == "logfmt.py":
            continue
        for lineno, level, ok in _Scan(tree, line_functions).found:
            out.append((f"{rel}:{lineno}", level, ok))
    return out


def test_no_prose_at_info_and_above() -> None:
    """Every log call in the package at INFO or above (or at a level chosen at run time)
    writes an event of logevents.EVENTS: a ``Line``/``logfmt``, never prose. DEBUG lines
    may stay prose: they are for whoever reads the code beside them, not for an
    operator's grep. The lab (spokeshare/lab/) is left out: it is a test bench, not a
    deployment."""
    calls = _log_calls()
    # The scan sees every kind of logger the package has: a module's, one passed in
    # (tasks.py), the rate-limited LAN log (hostile.py, nbss_answer.py), the lines a
    # pure core hands its adapter (hub_ipp.py, ipp_relay.py); and DEBUG prose.
    seen = {where.rsplit(":", 1)[0] for where, _, _ in calls}
    assert {"spokeshare/tunnel/hub.py", "spokeshare/tasks.py", "spokeshare/lan/hostile.py",
            "spokeshare/lan/nbss_answer.py", "spokeshare/printing/hub_ipp.py",
            "spokeshare/printing/ipp_relay.py"} <= seen  # fmt: skip
    assert any(level == logging.DEBUG and not ok for _, level, ok in calls)
    prose = [where for where, level, ok in calls if not ok and (level is None or level >= 20)]
    assert prose == []


def test_a_wrong_row_is_a_usage_error() -> None:
    """A row of the table written wrongly is our bug (errors.UsageError)."""
    with pytest.raises(UsageError, match="side"):
        logevents.Event("x", "nowhere", ("office",))
    with pytest.raises(UsageError, match="required"):
        logevents.Event("x", "edge", ("office",), ("peer",))
