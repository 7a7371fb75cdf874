"""Unit tests of self-contained library code (rnnlab/)."""
