"""Declarations: what a suite, a cell, a task, a method, a model and a run's files ARE, apart from the code that
runs them. Imports nothing else of the harness and nothing heavy (no torch, transformers or adapters), so
validating a suite, planning a grid or reading a store never loads a deep-learning framework.
"""
