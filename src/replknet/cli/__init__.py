"""Command-line interface; see `replknet --help`."""
