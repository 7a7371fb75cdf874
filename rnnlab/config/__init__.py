"""params.yaml: its sections, their defaults and checks (params.py)."""
