"""Training a variant (train.py, top-down to the optimiser step) and its per-epoch DVCLive history (history.py)."""
