"""Tests for spokeshare.lan: NetBIOS codecs, decision cores and the asyncio adapter."""
