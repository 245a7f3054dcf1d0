"""Hypothesis strategies shared by the codec tests."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

from hypothesis import strategies as st

T = TypeVar("T")

BYTE = st.integers(0, 255)


def mutated(
    base: bytes, byte: st.SearchStrategy[int] = BYTE, max_edits: int = 6
) -> st.SearchStrategy[bytes]:
    """``base`` (a captured or encoded message) with 1..``max_edits`` random edits:
    a byte replaced (drawn from ``byte``), the tail cut off, or a few bytes inserted."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        buf = bytearray(base)
        for _ in range(draw(st.integers(1, max_edits))):
            op = draw(st.sampled_from(["flip", "cut", "insert"]))
            pos = draw(st.integers(0, max(0, len(buf) - 1)))
            if op == "flip" and buf:
                buf[pos] = draw(byte)
            elif op == "cut":
                del buf[pos:]
            else:
                buf[pos:pos] = bytes(draw(st.lists(byte, min_size=1, max_size=4)))
        return bytes(buf)

    return build()


def mutated_any(samples: list[bytes], **kw: object) -> st.SearchStrategy[bytes]:
    """A mutation of one of ``samples``."""
    return st.sampled_from(samples).flatmap(lambda b: mutated(b, **kw))  # type: ignore[arg-type]


def around(limit: int, below: int = 3, above: int = 64) -> st.SearchStrategy[int]:
    """Lengths straddling an encoder's own limit: ``limit - below`` .. ``limit + above``,
    with the limit itself and one past it always among the first tried."""
    return st.one_of(st.sampled_from([limit, limit + 1]), st.integers(limit - below, limit + above))


def unchecked(cls: type[T], **fields: object) -> T:
    """A frozen dataclass instance built without ``__post_init__``: a value its
    constructor refuses (a comment over 255 bytes), for the encoder to put on the
    wire so that the decoder's side of the limit can be tested."""
    obj = object.__new__(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in fields:
            value = fields[f.name]
        elif f.default is not dataclasses.MISSING:
            value = f.default
        else:
            value = f.default_factory()  # type: ignore[operator]
        object.__setattr__(obj, f.name, value)
    return obj
