"""Hypothesis strategies shared by the codec tests."""

from __future__ import annotations

from hypothesis import strategies as st

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
