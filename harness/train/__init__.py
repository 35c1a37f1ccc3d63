"""Training: model loading, methods (what is added, what trains), the recipe every cell runs (recipe.py) and its parts, parameter counts."""
