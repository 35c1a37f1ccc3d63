"""Appending a dated section to bench/RESULTS.md: the machine, the commit and the command next to every table."""

from __future__ import annotations

import datetime as dt
import os

from harness.store.env import device_name, git_state

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


def append_section(title: str, command: str, columns: list[str], rows: list[str]) -> None:
    """`rows` are Markdown table lines under a header of `columns` (the first left-aligned, the rest right)."""
    header = "| " + " | ".join(columns) + " |\n|---|" + "---:|" * (len(columns) - 1)
    with open(RESULTS, "a") as f:
        f.write(f"\n## {dt.date.today().isoformat()} — {title} — {device_name()}, commit "
                f"{(git_state()['git_commit'] or 'n/a')[:10]}\n\n`{command}`\n\n{header}\n" + "\n".join(rows) + "\n")
