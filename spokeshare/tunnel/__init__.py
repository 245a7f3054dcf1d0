"""The tunnel between an office edge and the hub: framing, TLS, relay, pool, hub, edge."""
