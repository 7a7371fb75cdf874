"""Imported by pytest before any test module: the stages package first, so reproducible CPU math is
set up (stages/runtime.py) before a test module imports torch, as in every stage process."""

import stages  # noqa: F401
