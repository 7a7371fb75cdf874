"""Command-line tools beside the pipeline (not DVC stages): review, studies, seed bands, presets, predict.
Each is thin like a stage: its arguments, one call into the rnnlab library."""
