"""The board's view in the URL (st.query_params): every choice that selects what is shown -- suite, model, page,
filters -- is a widget made here, which starts from the URL's value when the page is opened and writes its value
back on every run, so the address bar always holds a link to the same view.

Each widget keeps its value in session state under "qp_<name>": set from the URL only the first time (or when the
URL's value is no longer among the options), so a user's click is never overridden by the URL it just wrote.
Parameters no widget used in a full run are dropped (`prune`): a link never carries a filter of another page.
"""

from __future__ import annotations

import streamlit as st

USED = "qp__used"


def _state_key(name: str) -> str:
    return f"qp_{name}"


def _mark(name: str) -> None:
    st.session_state.setdefault(USED, set()).add(name)


def begin() -> None:
    """Start of a full run: no parameter used yet."""
    st.session_state[USED] = set()


def prune() -> None:
    """End of a full run: drop the URL parameters that no widget of this view used."""
    used = st.session_state.get(USED, set())
    for name in [k for k in st.query_params.keys() if k not in used]:
        del st.query_params[name]


def url_value(name: str) -> str | None:
    return st.query_params.get(name)


def choose(widget, label: str, options, name: str, default=None, **kw):
    """A single-choice widget (st.selectbox, st.radio, st.sidebar.selectbox, ...) whose value lives in the URL
    as ?name=value (options compared as text: the URL holds text)."""
    options = list(options)
    key = _state_key(name)
    if not options:
        return None
    if key not in st.session_state or st.session_state[key] not in options:
        by_text = {str(o): o for o in options}
        wanted = url_value(name)
        st.session_state[key] = (by_text[wanted] if wanted in by_text
                                 else default if default in options else options[0])
    value = widget(label, options, key=key, **kw)
    st.query_params[name] = str(value)
    _mark(name)
    return value


def choose_many(widget, label: str, options, name: str, **kw) -> list:
    """A multi-choice widget (st.multiselect) whose values live in the URL as ?name=a&name=b."""
    options = list(options)
    key = _state_key(name)
    if key not in st.session_state or any(v not in options for v in st.session_state[key]):
        by_text = {str(o): o for o in options}
        st.session_state[key] = [by_text[v] for v in st.query_params.get_all(name) if v in by_text]
    values = widget(label, options, key=key, **kw)
    if values:
        st.query_params[name] = [str(v) for v in values]
    elif name in st.query_params:
        del st.query_params[name]
    _mark(name)
    return values


def link(**params) -> str:
    """A relative link to another view of this board (the run page of a cell, ...)."""
    from urllib.parse import urlencode

    return "?" + urlencode({k: v for k, v in params.items() if v is not None}, doseq=True)
