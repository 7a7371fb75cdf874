"""Imported by pytest before any test module: the runtime is configured first, as every entry point
does before it loads torch (rnnlab/runtime/environment.py), so tests see the stages' own math."""

from rnnlab.runtime import environment

environment.configure()
