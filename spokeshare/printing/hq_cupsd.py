"""HQ's cupsd versions that need a step of their own, and how to tell; pure.

CUPS 2.4.2-3+deb12u10 (Debian 12's security update of 2026) crashes (SIGSEGV) on
every request its default policy checks against the job's owner (``Require user
@OWNER @SYSTEM``: Send-Document, Cancel-Job, Hold-Job, ...) from a client that is
not local and has not authenticated, which is every office's print job through the
hub. README ("HQ: what its servers must be told") gives the step: drop those lines
from the default policy, :data:`OWNER_CHECKS_SED`, a ``sed`` expression the lab runs
as an operator would; ``spokeshare check --hub`` reports an affected cupsd whose
default policy still has them (:func:`owner_checks`).
"""

from __future__ import annotations

import re

#: ``dpkg-query -W -f='${Version}' cups-daemon`` of the affected versions.
OWNER_CHECK_CRASH = frozenset({"2.4.2-3+deb12u10"})
#: The README's ``sed -i`` expression for /etc/cups/cupsd.conf: within ``<Policy
#: default>``, delete the ``Require user @OWNER @SYSTEM`` lines.
OWNER_CHECKS_SED = r"/^<Policy default>/,/^<\/Policy>/{/Require user @OWNER @SYSTEM/d}"
#: The suffix of the copy ``sed -i`` keeps of cupsd.conf (``sed -i.pre-spokeshare``), from
#: which the owner checks are put back once a fixed cupsd is installed.
BACKUP_SUFFIX = ".pre-spokeshare"
#: Longest cupsd.conf read, characters (Debian's is about 6,700).
MAX_CONF = 1 << 20

_REQUIRE_OWNER = re.compile(r"^\s*Require\s+user\s+.*@OWNER", re.IGNORECASE)


def owner_checks(conf: str) -> int:
    """How many ``Require user ... @OWNER`` lines the ``<Policy default>`` section of
    cupsd.conf text ``conf`` holds (at most :data:`MAX_CONF` characters read; a
    policy section that never closes runs to the end)."""
    inside, found = False, 0
    for line in conf[:MAX_CONF].splitlines():
        word = line.strip()
        if re.match(r"<Policy\s+default\s*>", word, re.IGNORECASE):
            inside = True
        elif word.lower() == "</policy>":
            inside = False
        elif inside and _REQUIRE_OWNER.match(word):
            found += 1
    return found
