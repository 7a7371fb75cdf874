"""How the math runs: the reproducible mode's pins, torch's process settings and the machine-dependent timings
kept apart from the results (environment), and the deterministic kernels (gemm)."""
