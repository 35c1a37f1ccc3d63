"""Analyses of stored runs: paired comparisons, parameter accounting, adapter ablations."""
