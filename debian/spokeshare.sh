#!/bin/sh
# spokeshare from its private Python environment (see /usr/share/doc/spokeshare/).
# -I: neither PYTHON* variables nor the current directory change what runs.
exec /opt/spokeshare/bin/python3.11 -I -m spokeshare "$@"
