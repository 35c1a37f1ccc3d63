"""Launching work: the runner that claims cells, trains them and records the outcome."""
