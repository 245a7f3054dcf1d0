"""Log lines as one event and ``key=value`` fields, and reading them back; pure.

A line is the event (one or more plain words, e.g. ``stream`` or ``config reloaded``)
followed by fields in the order given::

    stream office=nyc client=198.18.11.10:50122 service=smb to_hq=1200 to_office=88 \
duration_s=0.412 result=ok
    config not reloaded file=/etc/spokeshare/hub.toml reason="unknown key limits.foo"

A value is written bare when it is a non-empty run of visible ASCII characters other
than ``"``, ``=`` and ``\\``; anything else is quoted (``"..."``, with ``\\"``, ``\\\\``,
``\\n``, ``\\r`` and ``\\t`` escaped), so every line stays one line and a value can be
read back exactly. Numbers and booleans become their ``str``; a float is written with
at most three decimals (seconds to the millisecond). ``None`` values are left out.

:class:`Line` formats when logged (``log.info("%s", Line("stream", office=...))``,
lazily, like ``%s`` arguments); :func:`logfmt` formats now; :func:`parse` is the
inverse and raises DecodeError for a line that is not in this form.
"""

from __future__ import annotations

import re

from spokeshare.errors import DecodeError, UsageError

_BARE = re.compile(r"^[!#-<>-\[\]-~]+$")  # visible ASCII but '"', '=' and '\'
_EVENT_WORD = re.compile(r"^[^\s=\"]+$")
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}
_QUOTE = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_KEY = re.compile(r"^[a-z][a-z0-9_]*$")


def value_text(value: object) -> str:
    """One value as it appears after ``key=`` (quoted when it must be)."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = f"{value:.3f}"
    else:
        text = str(value)
    if _BARE.match(text):
        return text
    return '"' + "".join(_QUOTE.get(c, c) for c in text) + '"'


def logfmt(event: str, **fields: object) -> str:
    """``event key=value ...`` (module docstring). Keys are lower-case identifiers;
    ``None`` values are omitted. Raises UsageError for a bad key or an event that is
    empty or has a word with ``=`` or ``"`` (the caller's bug, not input)."""
    words = event.split(" ")
    if not event or not all(_EVENT_WORD.match(w) for w in words):
        raise UsageError(f"bad event {event!r}")
    parts = [event]
    for key, value in fields.items():
        if not _KEY.match(key):
            raise UsageError(f"bad field name {key!r}")
        if value is not None:
            parts.append(f"{key}={value_text(value)}")
    return " ".join(parts)


class Line:
    """A log line built when (and if) the logging call formats it: ``str(Line(event,
    **fields)) == logfmt(event, **fields)``."""

    __slots__ = ("event", "fields")

    def __init__(self, event: str, **fields: object) -> None:
        self.event = event
        self.fields = fields

    def __str__(self) -> str:
        return logfmt(self.event, **self.fields)

    def __repr__(self) -> str:
        return f"<Line {self}>"

    def adding(self, **fields: object) -> Line:
        """This line with ``fields`` after its own (a field it has already is replaced
        in place)."""
        return Line(self.event, **{**self.fields, **fields})


def parse(line: str) -> tuple[str, dict[str, str]]:
    """``logfmt``'s inverse: (event, {key: value text}). Values come back as the text
    that was formatted (``"0.412"``, not a float). Text before the event (a logging
    prefix) is not allowed here: pass the message alone.

    Raises DecodeError (protocol "logfmt") for a line not in this form (a bad quote or
    escape, a key repeated, a word without ``=`` after the first field).
    """
    i, n = 0, len(line)
    words: list[str] = []
    fields: dict[str, str] = {}
    while i < n:
        j = i
        while j < n and line[j] not in " =":
            j += 1
        word = line[i:j]
        if j < n and line[j] == "=":
            if not _KEY.match(word):
                raise DecodeError("logfmt", f"bad field name {word!r} at {i}")
            value, i = _value(line, j + 1)
            if word in fields:
                raise DecodeError("logfmt", f"field {word!r} twice")
            fields[word] = value
        else:
            if fields or not _EVENT_WORD.match(word):
                raise DecodeError("logfmt", f"unexpected {word!r} at {i}")
            words.append(word)
            i = j
        if i < n:
            if line[i] != " ":
                raise DecodeError("logfmt", f"expected a space at {i}")
            i += 1
            if i == n:
                raise DecodeError("logfmt", "trailing space")
    if not words:
        raise DecodeError("logfmt", "no event")
    return " ".join(words), fields


def _value(line: str, i: int) -> tuple[str, int]:
    """The value starting at ``i`` and the index just after it."""
    n = len(line)
    if i < n and line[i] == '"':
        out: list[str] = []
        i += 1
        while i < n:
            c = line[i]
            if c == '"':
                return "".join(out), i + 1
            if c == "\\":
                if i + 1 >= n or line[i + 1] not in _ESCAPES:
                    raise DecodeError("logfmt", f"bad escape at {i}")
                out.append(_ESCAPES[line[i + 1]])
                i += 2
                continue
            out.append(c)
            i += 1
        raise DecodeError("logfmt", "unterminated quote")
    j = i
    while j < n and line[j] != " ":
        j += 1
    text = line[i:j]
    if not _BARE.match(text):
        raise DecodeError("logfmt", f"bad bare value {text!r} at {i}")
    return text, j


def find(lines: str, event: str) -> list[dict[str, str]]:
    """The fields of every line in ``lines`` (a log, one entry a line, each possibly
    after a logging prefix ending in ``": "``) whose event is ``event``."""
    out = []
    for raw in lines.splitlines():
        head = raw.find(f": {event} ")
        msg = raw[head + 2 :] if head >= 0 else raw
        try:
            ev, fields = parse(msg)
        except DecodeError:
            continue
        if ev == event:
            out.append(fields)
    return out
