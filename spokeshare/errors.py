"""The exception tree, shaped by what callers catch.

Three kinds of failure, three exceptions, never mixed:

- :class:`DecodeError`: bad bytes from the wire (the LAN, a peer, a client's request).
  Codecs raise only this (never IndexError, struct.error, UnicodeDecodeError, ...).
  Callers drop the packet or the connection and log at debug level. It subclasses
  ``ValueError`` so that a ``except ValueError`` around foreign parsing keeps working.
- :class:`ConfigError`: a configuration file or command-line value is wrong. Names the
  file and the dotted key.
- :class:`UsageError`: an API called wrongly: a field out of range given to an encoder
  or a message's constructor, a state transition its table does not list, a core
  built with settings it cannot run with. A bug on our side, never bad input: it is
  *not* a ``ValueError``, so nothing that handles bad input catches it by accident.
  A decoder that builds messages from decoded values turns a refusal into a
  DecodeError (:func:`decoder`).

And, for the deployment: :class:`EnrollmentError` (the CA, a bundle or the office
registry refuses an action). The lab's ``LabError`` and the benchmarks' ``BenchError``
derive from :class:`SpokeshareError` too. A stream decoder that has not seen a whole
message yet returns :data:`spokeshare.lan.NEED_DATA`; that is not an error.

Foreign exceptions (``ssl.SSLError``, ``OSError``) are translated at the boundary that
calls the foreign code, never deeper.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

_P = ParamSpec("_P")
_R = TypeVar("_R")


class SpokeshareError(Exception):
    """Root of every error spokeshare raises on purpose."""


class DecodeError(SpokeshareError, ValueError):
    """Bytes that do not parse as the protocol says.

    ``protocol`` names the codec ("nbns", "tunnel-header", ...), ``offset`` the byte
    where decoding stopped (or -1 when unknown).
    """

    def __init__(self, protocol: str, reason: str, offset: int = -1) -> None:
        self.protocol = protocol
        self.reason = reason
        self.offset = offset
        where = f" at byte {offset}" if offset >= 0 else ""
        super().__init__(f"{protocol}: {reason}{where}")


def decoder(protocol: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Make a public decode function keep its contract: only :class:`DecodeError`.

    Message classes validate on construction and refuse with ``UsageError`` (a comment
    over 255 bytes, a name over 15); the standard library's constructors they call
    (ipaddress, enum) refuse with ``ValueError``. When decoded bytes carry such a
    value the refusal is bad input, so it is raised as a DecodeError of ``protocol``.
    Decoders still check what they can before building (with a precise offset);
    this is the boundary that keeps a check they missed from escaping as a
    ``UsageError`` or ``ValueError`` (and, in a datagram handler, as a traceback per
    packet).
    """

    def wrap(fn: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(fn)
        def decode(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return fn(*args, **kwargs)
            except DecodeError:
                raise
            except (ValueError, UsageError) as exc:
                raise DecodeError(protocol, f"value refused: {exc}") from exc

        return decode

    return wrap


class ConfigError(SpokeshareError):
    """A configuration value is missing, unknown or invalid."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        at = f"{source}: {key}" if key else source
        super().__init__(f"{at}: {reason}")


class EnrollmentError(SpokeshareError):
    """The deployment (CA, registry, bundle) refuses the requested action."""


class UsageError(SpokeshareError):
    """An API was called in a way it does not allow (a bug on the caller's side)."""
