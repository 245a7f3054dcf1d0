"""The one log line per stream, the same at the edge and at the hub; pure.

Both ends write (spokeshare.logfmt)::

    stream office=nyc client=198.18.11.10:50122 service=smb to_hq=1200 to_office=88 \
duration_s=0.412 result=ok

- ``to_hq``: payload bytes from the office's client towards HQ's backend; at the edge
  what it read from the client, at the hub what it wrote to the backend;
- ``to_office``: payload bytes from HQ's backend towards the client;
- ``duration_s``: seconds, from the client's connection (edge) or the open header
  (hub) to the stream's end;
- ``result``: ``ok``, ``refused`` (with ``status=`` the wire status name), ``rejected``
  (the edge had no tunnel for the client), ``plain-reset``, ``plain-closed``,
  ``tunnel-lost``, ``bad-frame``, ``aborted``; ``reason=`` says more when there is more.

For a clean stream the two ends' ``to_hq`` agree, and so do their ``to_office``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from spokeshare.logfmt import Line

EVENT = "stream"


class Result(enum.Enum):
    """How a stream ended; the value is the text of its log line's ``result=``."""

    OK = "ok"
    #: The hub answered a status other than OK (the edge's splice; detail: the status).
    REFUSED = "refused"
    PLAIN_RESET = "plain side reset"
    PLAIN_CLOSED = "plain side closed without EOF"
    #: The tunnel went away without its EOF frame (detail: the error, if any).
    TUNNEL_LOST = "tunnel lost"
    #: The peer sent bytes that are not frames (detail: what was wrong).
    BAD_FRAME = "bad frame from peer"
    #: Cut from outside: revocation, shutdown, no answer in time (detail: the reason).
    ABORTED = "aborted"


@dataclass(frozen=True, slots=True)
class Ending:
    """A :class:`Result` and its detail. ``str()`` is what the stream's log line says
    (``ok``, ``tunnel lost: ...``, ``refused: NOT_ALLOWED``, an abort's own reason)."""

    kind: Result
    detail: str = ""

    def __str__(self) -> str:
        if self.kind is Result.ABORTED:
            return self.detail or self.kind.value
        return f"{self.kind.value}: {self.detail}" if self.detail else self.kind.value

    @property
    def ok(self) -> bool:
        """True when both directions ended with their EOF."""
        return self.kind is Result.OK


def result_fields(ending: Ending | None) -> tuple[str, str | None, str | None]:
    """(``result``, ``status``, ``reason``) of an Ending: the Result's name as a token
    (``tunnel-lost``), and its detail as the status of a refusal, else as the reason.
    None: the stream has not ended (``open``)."""
    if ending is None:
        return "open", None, None
    result = ending.kind.name.lower().replace("_", "-")
    if result == "refused":
        return result, ending.detail or None, None
    return result, None, ending.detail or None


def stream_line(
    office: str,
    client: str,
    service: str,
    to_hq: int,
    to_office: int,
    duration_s: float,
    result: str,
    status: str | None = None,
    reason: str | None = None,
) -> Line:
    """The stream's line (module docstring); ``client`` is ``HOST:PORT`` or ``-``."""
    return Line(
        EVENT,
        office=office,
        client=client,
        service=service,
        to_hq=to_hq,
        to_office=to_office,
        duration_s=duration_s,
        result=result,
        status=status,
        reason=reason,
    )
