"""The temporal-order task (Hochreiter & Schmidhuber 1997, experiment 6a): sequences, labels, symbols."""
