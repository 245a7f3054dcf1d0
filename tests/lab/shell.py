"""Running a command in a lab host's namespace from a test."""

from __future__ import annotations

import subprocess

from spokeshare.lab.topology import Lab


def sh(lab: Lab, host: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in ``host``'s namespace; its exit status and text output.

    ``timeout`` is in seconds (:class:`subprocess.TimeoutExpired` past it); a non-zero
    exit is not raised, the caller reads ``returncode``.
    """
    return lab.exec(host, list(argv), capture_output=True, text=True, timeout=timeout)
