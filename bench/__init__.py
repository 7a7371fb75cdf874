"""RNN Lab benchmarks: `python -m bench` prints measured times and ratios taken in one run (issue 7)."""
