"""How the math runs: the reproducible mode's pins (environment), torch's process settings (torch_setup),
and machine-dependent timings kept apart from the results (timings)."""
