"""The DVC pipeline's entry points, one module per stage of dvc.yaml; each is thin: its arguments,
its params section, one call into the rnnlab library. Importing them has no side effects."""
