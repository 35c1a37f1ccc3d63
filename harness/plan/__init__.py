"""Suites and cells: YAML -> a typed, validated suite -> the grid of cells, each with a stable key."""
