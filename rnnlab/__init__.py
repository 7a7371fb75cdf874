"""RNN Lab library code that does not depend on the pipeline stages."""
