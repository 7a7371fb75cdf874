"""Comparing two revisions' results for a pull request: reading them, paired statistics, verdicts,
the Markdown report and its charts (python -m tools.review)."""
