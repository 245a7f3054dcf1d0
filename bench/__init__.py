"""The benchmarks: loopback tunnel (:mod:`bench.tunnel`),
across the lab's WAN (:mod:`bench.wan`, ``spokeshare bench wan``),
and what they share (:mod:`bench.common`). Part of the source checkout, not of the
installed package: the hub and the edge never import it."""
