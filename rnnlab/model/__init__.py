"""One recurrent classifier for every task (the cell picked by `model.cell`), its sizes and its checkpoints."""
