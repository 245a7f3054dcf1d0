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

from spokeshare.logfmt import Line
from spokeshare.tunnel.relay import Ending

EVENT = "stream"


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
