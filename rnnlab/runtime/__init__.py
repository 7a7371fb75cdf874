"""RNN Lab runtime support shared by the pipeline, importable without `stages`."""
