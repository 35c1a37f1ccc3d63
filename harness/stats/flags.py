"""Flags beside a table cell: `trivial` (not above the trivial baseline by more than the seed noise) and
`still_improving` (the dev curve was still rising at the last evaluation)."""

from __future__ import annotations

import math

TRIVIAL_FLOOR = 1.0      # GLUE points: the least noise a cell is granted, so one seed (std 0) is not flagged by a hair
IMPROVING_TOL = 0.5      # GLUE points the last evaluation must beat the previous one by


def trivial_score(trivial_scores) -> float | None:
    """The strongest trivial baseline of a run ({name: score}), or None when the run has none."""
    values = [float(v) for v in (trivial_scores or {}).values() if v is not None and not math.isnan(float(v))]
    return max(values) if values else None


def is_trivial(mean, std, baseline) -> bool:
    """mean - baseline <= max(std over seeds, TRIVIAL_FLOOR); False when the baseline is unknown."""
    if baseline is None or mean is None or (isinstance(baseline, float) and math.isnan(baseline)):
        return False
    std = 0.0 if std is None or (isinstance(std, float) and math.isnan(std)) else std
    return mean - baseline <= max(std, TRIVIAL_FLOOR)


def still_improving(history) -> bool:
    """The last dev evaluation is the best of the run and above the previous one by more than IMPROVING_TOL."""
    scores = [h.get("score") for h in (history or []) if isinstance(h, dict) and h.get("score") is not None]
    if len(scores) < 2:
        return False
    return scores[-1] >= max(scores) and scores[-1] - scores[-2] > IMPROVING_TOL
