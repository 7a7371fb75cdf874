"""One recurrent classifier for every task (the cell picked by `model.cell`), its parts and its checkpoints."""
