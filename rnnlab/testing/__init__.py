"""Test and benchmark helpers that ship with the library (no stage imports them): a synthetic IMDB archive."""
