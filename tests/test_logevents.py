"""The operator's log lines: every event in spokeshare.logevents reads back with
spokeshare.logfmt's parser with its fields, every line the package writes is one of
them with the fields its row allows, and README's "Log lines" lists exactly them."""

from __future__ import annotations

import ast
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
                    isinstance(k, ast.Constant) and isinstance(k.value, str)
                    for k in kw.value.keys
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


def test_a_wrong_row_is_a_usage_error() -> None:
    """A row of the table written wrongly is our bug (errors.UsageError)."""
    with pytest.raises(UsageError, match="side"):
        logevents.Event("x", "nowhere", ("office",))
    with pytest.raises(UsageError, match="required"):
        logevents.Event("x", "edge", ("office",), ("peer",))
