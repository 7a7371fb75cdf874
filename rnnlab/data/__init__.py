"""The X/lengths/y arrays every task writes and train/evaluate read: one format for all datasets."""
