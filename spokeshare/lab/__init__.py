"""The lab: HQ and branch offices as network namespaces on one machine.

- :mod:`spokeshare.lab.wire`: the sans-IO link model (delay, jitter, loss, rate, up/down).
- :mod:`spokeshare.lab.wan`: the WAN forwarder process between two TAP devices, and
  :class:`~spokeshare.lab.wan.WanLink`, its parent-side handle.
- :mod:`spokeshare.lab.netns`: namespaces, veth pairs, bridges, sysctls, and the state
  file that lets ``down`` remove everything after a crash.
- :mod:`spokeshare.lab.services`: HQ's ``smbd``/``cupsd``, the offices' file servers,
  the PCs' client configuration.
- :mod:`spokeshare.lab.topology`: :class:`~spokeshare.lab.topology.Lab`, the whole.
- :mod:`spokeshare.lab.cli`: ``spokeshare lab ...``.

See ``docs/lab.md`` for the address plan and the emulator's measured ceiling.
"""
