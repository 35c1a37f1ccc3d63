"""The plain progress lines a worker prints in logs (Slurm, CI, pipes): what they say must be what happened."""

from harness.train.progress import Progress


def test_a_progress_line_s_percentage_is_its_steps_share():
    """A 4-step cell logged `1/4 steps (20%`, `3/4 steps (70%`: the share was rounded down to the 10% step at which
    a line is printed, so the line contradicted its own count. A line is still printed once per 10% passed, and
    says its count's share (rounded down: 100% only at the last step)."""
    lines = []
    bar = Progress(4, "sst2/full", bars=True)
    bar._bar, bar.write = None, lines.append   # the plain lines (a terminal would get a tqdm bar)
    for _ in range(4):
        bar.update()
    assert [line.split(" (")[1].split(",")[0] for line in lines] == ["25%", "50%", "75%", "100%"], lines
    lines.clear()
    bar = Progress(1000, "x", bars=True)
    bar._bar, bar.write = None, lines.append
    for _ in range(1000):
        bar.update()
    shares = [line.split(" (")[1].split(",")[0] for line in lines]
    assert len(lines) == 11 and shares[0] == "0%" and shares[-1] == "100%", lines   # a line per 10%, as before
