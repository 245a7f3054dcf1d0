"""``python -m spokeshare``: the same as the ``spokeshare`` command."""

import sys

from spokeshare.cli import main

sys.exit(main())
