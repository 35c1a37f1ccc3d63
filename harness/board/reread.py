"""A store read at rest (without locks, harness/store/engine.py) that a worker wrote during the read is refused
(StoreChanged): the command line says "run the command again", the board reads again itself. The next read sees
the worker's -wal and reads with locks, so one more read normally suffices; after REREADS in a row the page says
so and shows nothing from those reads. One counter for the whole page and the Grid's own timed refreshes (a
Streamlit fragment, which reruns without the page)."""

from __future__ import annotations

import streamlit as st

from harness.store.redact import redact_url

REREADS = 3
_KEY = "_store_rereads"


def read_again() -> None:
    """After a StoreChanged: the app runs again (st.rerun raises), cached reads dropped, up to REREADS times in a
    row; returns once they are spent (the caller then says `given_up`)."""
    tries = st.session_state.get(_KEY, 0)
    if tries < REREADS:
        st.session_state[_KEY] = tries + 1
        st.cache_data.clear()   # the cached reads may be the torn one's
        st.rerun(scope="app")
    st.session_state[_KEY] = 0


def read_fine() -> None:
    st.session_state[_KEY] = 0


def given_up(url: str) -> str:
    return (f"The store `{redact_url(url)}` was written while it was read, {REREADS + 1} times in a row: nothing "
            f"is shown from a read that could mix two states. Reload the page.")
