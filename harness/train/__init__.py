"""Training: model loading, methods (what is added, what trains), the one loop, parameter counts."""
