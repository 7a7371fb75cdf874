"""DVC experiments as studies: collecting them and their seed spreads, named presets, seed bands."""
