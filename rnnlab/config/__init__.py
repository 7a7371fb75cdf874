"""params.yaml: its sections, their defaults and checks, and the per-stage resolved files (params.py)."""
