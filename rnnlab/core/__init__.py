"""What every stage and tool shares: user errors, atomic files, the CLI exit contract, forked workers, memory
checks, git, the pipeline's paths and the stages' code fingerprints. Imports nothing else from rnnlab."""
