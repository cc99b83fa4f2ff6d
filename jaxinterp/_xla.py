"""XLA:CPU settings measured to matter, applied before JAX starts (see benchmarks/RESULTS.md).

YNN fusions off made forward and backward passes ~1.2x faster on the project's CPUs. A user's own XLA_FLAGS win:
a flag they already set is left alone. ``JAXINTERP_NO_XLA_FLAGS=1`` turns this off.
"""

import os

_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=",)

if not os.environ.get("JAXINTERP_NO_XLA_FLAGS"):
    current = os.environ.get("XLA_FLAGS", "")
    extra = [f for f in _FLAGS if f.split("=")[0] not in current]
    os.environ["XLA_FLAGS"] = " ".join([current, *extra]).strip()
