"""spokeshare: HQ's file and print servers on every branch-office LAN, over mutual TLS 1.3."""

__version__ = "0.1.0"
