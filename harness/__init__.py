"""Benchmark harness for parameter-efficient transfer learning.

Data flow: suite (YAML) -> cells -> one training loop -> store -> leaderboard / export.
"""

__version__ = "0.1.0"
