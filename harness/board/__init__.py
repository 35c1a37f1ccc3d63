"""The Streamlit leaderboard, shipped in the package: `harness board` serves APP (`streamlit run APP -- --db URL`).

app.py only draws: the tables, the Pareto frontier and the aggregates come from harness.report.
"""

from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"
