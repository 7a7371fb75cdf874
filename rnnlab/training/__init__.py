"""Training a variant: the loop, the optimiser, the DVCLive history and the memory check before it starts."""
