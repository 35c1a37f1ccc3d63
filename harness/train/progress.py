"""Progress for people: tqdm bars on a terminal, plain lines in logs (Slurm, CI, pipes)."""

from __future__ import annotations

import sys
import time

from harness.spec.status import share


class Progress:
    """`enabled`: this process reports at all (rank 0 only). `bars`: show step progress; `write` lines (cell
    summaries, evaluations) are shown whenever enabled."""

    def __init__(self, total: int, desc: str, enabled: bool = True, unit: str = "step", position: int = 0,
                 bars: bool = True):
        self.total, self.desc, self.enabled, self.unit, self.bars = total, desc, enabled, unit, bars
        self.n, self._last_tenth, self._t0 = 0, -1, time.perf_counter()
        self._bar = None
        self._postfix: dict = {}   # the latest given (the loop gives its loss only where it reads it)
        if enabled and bars and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, position=position, leave=position == 0,
                             dynamic_ncols=True)

    def update(self, n: int = 1, **postfix) -> None:
        if not (self.enabled and self.bars):
            return
        self.n += n
        self._postfix = postfix or self._postfix
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            return
        tenth = int(10 * self.n / max(self.total, 1))
        if tenth != self._last_tenth:   # a line every 10%, saying its own count's share (3/4: 75%, not 70%)
            self._last_tenth = tenth
            extra = " ".join(f"{k}={v}" for k, v in self._postfix.items())
            self.write(f"{self.desc}: {self.n}/{self.total} {self.unit}s ({share(self.n, max(self.total, 1))}, "
                       f"{time.perf_counter() - self._t0:.0f}s) {extra}".rstrip())

    def write(self, line: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
