"""Tasks: the registry (what a task is), loading its data, and its official metrics."""
