"""Serve the leaderboard with `streamlit run` on localhost and photograph it in headless Chromium.

  python -m harness.board.screenshot --db sqlite:///results/harness.db -o docs/leaderboard.png
  python -m harness.board.screenshot --db sqlite:///results/harness.db --query '?page=Grid&suite=demo' -o docs/grid.png

Used by the real-browser test and to refresh the README's picture. Needs Debian's chromium and the
playwright package (no browser download: Playwright drives the system Chromium).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

from harness.board import APP

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(db: str, timeout: float = 60):
    """Yields the URL of a leaderboard served on a free localhost port; stops the server afterwards."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
                               "--server.address", "127.0.0.1", "--server.headless", "true",
                               "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal",
                               "--", "--db", db], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if server.poll() is not None:
                raise RuntimeError("streamlit exited before serving")
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.terminate()
        server.wait(timeout=10)


def screenshot(db: str, out: str, wait_for_text: str | None = None, width: int = 1400, height: int = 900,
               query: str = "") -> str:
    """`query`: the view to open, as the board's URL query parameters ('?page=Grid&suite=demo')."""
    from playwright.sync_api import sync_playwright

    with served(db) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(url + query, wait_until="domcontentloaded")
        if wait_for_text:
            # the grid paints on a canvas; its cells are in the DOM as (hidden) accessibility nodes
            page.get_by_text(wait_for_text).first.wait_for(state="attached", timeout=60_000)
        # a visible table (a collapsed expander's are hidden)
        page.locator('[data-testid="stDataFrame"] >> visible=true').first.wait_for(state="visible", timeout=60_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=out, full_page=True)
        browser.close()
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True)
    ap.add_argument("-o", "--output", default="leaderboard.png")
    ap.add_argument("--query", default="", help="the view, as URL query parameters: '?page=Grid&suite=demo'")
    args = ap.parse_args()
    print(screenshot(args.db, args.output, query=args.query))
