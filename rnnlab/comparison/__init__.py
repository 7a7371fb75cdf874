"""Comparing two revisions' results for a pull request (python -m tools.review)."""
