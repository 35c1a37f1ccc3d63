"""The board's view in the URL (st.query_params): every choice that selects what is shown -- suite, model, page,
filters -- is a widget made here, which starts from the URL's value when the page is opened and writes its value
back on every run, so the address bar always holds a link to the same view.

Each widget keeps its value in session state under "qp_<name>": set from the URL only the first time (or when the
URL's value is no longer among the options), so a user's click is never overridden by the URL it just wrote. A
multi-choice widget the user has left at its default follows its options instead (choose_many).
Parameters no widget used in a full run are dropped (`prune`): a link never carries a filter of another page.
A value of the opened link that is not among its widget's options (a suite not in this store, a mistyped task,
a run filtered out) is named in a warning, with what is shown instead: the view differs from the link's.
"""

from __future__ import annotations

import streamlit as st

USED = "qp__used"
LINK = "qp__link"   # the URL parameters the session was opened with, until its first full run ends
NONE = ""   # a multi-choice parameter whose every default value the user took out (?name=): none, not the default


def _state_key(name: str) -> str:
    return f"qp_{name}"


def _mark(name: str) -> None:
    st.session_state.setdefault(USED, set()).add(name)


def begin() -> None:
    """Start of a full run: no parameter used yet. The first one of a session keeps the link it was opened with:
    only its values are checked against the options (later the URL holds what the widgets wrote, and a value
    that stops being an option, a model after the suite changed, is no mistake of the link's)."""
    st.session_state[USED] = set()
    if LINK not in st.session_state:
        st.session_state[LINK] = {k: st.query_params.get_all(k) for k in st.query_params.keys()}


def prune() -> None:
    """End of a full run: drop the URL parameters that no widget of this view used."""
    used = st.session_state.get(USED, set())
    for name in [k for k in st.query_params.keys() if k not in used]:
        del st.query_params[name]
    st.session_state[LINK] = {}


def _from_link(name: str, given: list[str]) -> bool:
    """Whether `given` (the URL's values of `name`) are the opened link's, not yet checked."""
    link = st.session_state.get(LINK) or {}
    return bool(given) and link.pop(name, None) == given


def _not_a_choice(name: str, label: str, values: list[str], instead: str) -> None:
    shown = ", ".join(repr(v) for v in values)
    from harness.report.export import md_escape   # (a link's values are anyone's text: not Markdown)

    st.warning(md_escape(f"The link's {name}={shown} is not among the choices of \"{label}\" here: {instead}.",
                         cell=False))


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
        fallback = default if default in options else options[0]
        st.session_state[key] = by_text[wanted] if wanted in by_text else fallback
        if wanted is not None and wanted not in by_text and _from_link(name, [wanted]):
            _not_a_choice(name, label, [wanted], f"showing {kw.get('format_func', str)(fallback)} instead")
    value = widget(label, options, key=key, **kw)
    st.query_params[name] = str(value)
    _mark(name)
    return value


def _untouched_key(name: str) -> str:
    return f"qp__untouched_{name}"


def choose_many(widget, label: str, options, name: str, default=None, **kw) -> list:
    """A multi-choice widget (st.multiselect) whose values live in the URL as ?name=a&name=b. `default`: the
    values chosen where the URL names none (else none); while they are the values chosen the URL leaves the
    parameter out (a short link), and once every one is taken out it says so (?name=).

    While the user has not changed it from its default, it is the default of this run's options, not the list
    saved in the session: a variant that completes while the board is open is shown (the saved list, still valid,
    would have left it out, and the URL then named that list). A saved or linked list none of whose values is a
    choice here (another suite's or model's) falls back to the default, not to none."""
    options = list(options)
    default = [v for v in default or [] if v in options]
    key, untouched = _state_key(name), _untouched_key(name)
    # the values the widget showed last run as "the default": the user has not changed them since
    if key in st.session_state and st.session_state[key] == st.session_state.get(untouched):
        st.session_state[key] = list(default)
    if key not in st.session_state or any(v not in options for v in st.session_state[key]):
        by_text = {str(o): o for o in options}
        given = st.query_params.get_all(name)
        chosen = [by_text[v] for v in given if v in by_text]
        st.session_state[key] = chosen if chosen or given == [NONE] else list(default)
        unknown = [v for v in given if v not in by_text and v != NONE]
        if unknown and _from_link(name, given):
            _not_a_choice(name, label, unknown, "left out" if chosen or not default else "showing the default")
    values = widget(label, options, key=key, **kw)
    is_default = bool(default) and set(values) == set(default)
    st.session_state[untouched] = list(values) if is_default else None
    if is_default:
        st.query_params.pop(name, None)
    elif values:
        st.query_params[name] = [str(v) for v in values]
    elif default:
        st.query_params[name] = NONE
    elif name in st.query_params:
        del st.query_params[name]
    _mark(name)
    return values


def link(**params) -> str:
    """A relative link to another view of this board (the run page of a cell, ...)."""
    from urllib.parse import urlencode

    return "?" + urlencode({k: v for k, v in params.items() if v is not None}, doseq=True)
