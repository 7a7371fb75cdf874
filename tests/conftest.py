"""Imported by pytest before any test module: the runtime is configured first, as every entry point
does before it loads torch, so tests see the stages' own math. Every test under tests/e2e is marked
e2e, so `pytest -m "not e2e"` runs the fast tiers whatever a module declares."""

from pathlib import Path

import pytest

from rnnlab.runtime import environment

environment.configure()

END_TO_END = Path(__file__).resolve().parent / "e2e"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if END_TO_END in item.path.parents:
            item.add_marker(pytest.mark.e2e)
