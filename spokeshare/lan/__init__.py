"""The edge's presence on the office LAN: the protocols PCs use to find and resolve
its virtual names (NetBIOS name service, browse announcements and session service,
LLMNR, mDNS, WS-Discovery), as sans-IO codecs and decision cores plus thin asyncio
adapters."""
