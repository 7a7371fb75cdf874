"""RNN Lab's pipeline stages. Importing the package first sets up reproducible CPU math.

Python runs this file before any `stages.<module>`, and so before torch or numpy is imported:
the math libraries read their settings (kernel ISA, MKL's reproducibility mode) only when they load.
"""

from stages import runtime

runtime.configure()
