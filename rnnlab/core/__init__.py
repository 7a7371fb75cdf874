"""What every stage and tool shares: user errors, atomic files, the CLI exit contract, forked workers,
progress bars, memory checks and the pipeline's paths. Imports nothing else from rnnlab."""
