"""The plain progress lines a worker prints in logs (Slurm, CI, pipes): what they say must be what happened."""

from harness.train.progress import Progress


def test_a_progress_line_s_percentage_is_its_steps_share():
    """A 4-step cell logged `1/4 steps (20%`, `3/4 steps (70%`: the share was rounded down to the 10% step at which
    a line is printed, so the line contradicted its own count. A line is still printed once per 10% passed, and
    says its count's share (100% only at the last step)."""
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
    assert len(lines) == 11 and shares[0] == "<1%" and shares[-1] == "100%", lines   # a line per 10%, as before


def test_a_progress_line_says_a_share_as_harness_status_says_it():
    """A worker's line said step 1 of 201 was "0%" where `harness status` says "<1%" (0% only for none); 200 of 201
    read "99%" there, ">99%" in status. One rule for both (harness.spec.status.share)."""
    from harness.spec.status import share

    lines = []
    bar = Progress(201, "x", bars=True)
    bar._bar, bar.write = None, lines.append
    bar.update()
    assert lines[-1].startswith("x: 1/201 steps (<1%, ") and share(1, 201) == "<1%", lines
    bar._last_tenth = -1   # force a line at the next step
    bar.update(199)
    assert lines[-1].startswith("x: 200/201 steps (>99%, ") and share(200, 201) == ">99%", lines
