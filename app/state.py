"""URL and session state: one name per setting, read from ``st.query_params`` once, written back.

A page's settings live in ``st.session_state`` under ``"<page>.<name>"`` (pages do not leak settings
into each other) and in the URL under ``<name>``, the same name as the library's (``RunSpec``)
and the CLI's. Links made before the names were unified keep working: :data:`LEGACY_KEYS` maps
the old keys to the new. A bad value in a link falls back to the default with a notice that
names the value used instead; nothing is replaced silently.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import streamlit as st

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

# old URL key -> (page or "*" for every page, new key)
LEGACY_KEYS: dict[str, tuple[str, str]] = {
    "source": ("*", "score"),
    "proj_kind": ("*", "projection"),
    "pkind": ("projection", "projection"),
    "pstrength": ("projection", "strength"),
    "variant": ("projection", "sampler"),
    "img_data": ("images", "data"),
    "img_sampler": ("images", "sampler"),
    "img_steps": ("images", "steps"),
    "img_pkind": ("images", "projection"),
    "img_strength": ("images", "strength"),
    "img_final": ("images", "final_denoise"),
    "img_seed": ("images", "seed"),
    "img_n": ("images", "n"),
    "m_density": ("maths", "density"),
    "m_t": ("maths", "t"),
    "m_beta_max": ("maths", "beta_max"),
    "m_T": ("maths", "T"),
    "m_sigma_max": ("maths", "sigma_max"),
}
_BOOL_TRUE = ("1", "true", "yes", "on")
_BOOL_FALSE = ("0", "false", "no", "off")


def skey(page: str, name: str) -> str:
    """The session-state key of a page's setting."""
    return f"{page}.{name}"


def parse_value(
    raw: str, default: Any, valid: Sequence[Any] | None = None, lo: Any = None, hi: Any = None
) -> Any:
    """Parse one URL value to the type of ``default`` and check it.

    Raises:
        ValueError: with a message naming what is wrong (not a number, not finite, out of range,
            not one of the choices).
    """
    if isinstance(default, bool):
        low = raw.strip().lower()
        if low in _BOOL_TRUE:
            return True
        if low in _BOOL_FALSE:
            return False
        raise ValueError("expected true or false")
    if isinstance(default, int | float):
        try:
            num = float(raw)
        except ValueError:
            raise ValueError("not a number") from None
        if not math.isfinite(num):
            raise ValueError("not a finite number")
        if isinstance(default, int):
            if num != int(num):
                raise ValueError("not an integer")
            value: Any = int(num)
        else:
            value = num
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ValueError(f"outside [{lo}, {hi}]")
        if valid is not None and value not in valid:
            raise ValueError(f"not one of {', '.join(map(str, valid))}")
        return value
    if valid is not None and raw not in valid:
        raise ValueError(f"not one of {', '.join(map(str, valid))}")
    return raw


def url_raw(page: str, name: str) -> str | None:
    """The URL's value of a setting, under its name or a legacy one."""
    raw = st.query_params.get(name)
    if raw is not None:
        return raw
    for old, (pg, new) in LEGACY_KEYS.items():
        if new == name and pg in ("*", page):
            raw = st.query_params.get(old)
            if raw is not None:
                return raw
    return None


def url_state(
    page: str,
    name: str,
    default: Any,
    valid: Sequence[Any] | None = None,
    lo: Any = None,
    hi: Any = None,
) -> str:
    """Seed a page's setting from the URL once, validated; returns its session-state key.

    A bad URL value falls back to ``default`` with a notice naming both values.
    """
    key = skey(page, name)
    st.session_state.setdefault("_url_keys", {})[key] = name
    jump = st.session_state.pop(f"goto.{key}", None)  # set by another page's "open it on ..." button
    if jump is not None:
        st.session_state[key] = jump
        return key
    if key not in st.session_state:
        value = default
        raw = url_raw(page, name)
        if raw is not None:
            try:
                value = parse_value(raw, default, valid, lo, hi)
            except ValueError as e:
                notice(f"URL setting {name}={raw[:40]!r} ignored ({e}); using {name}={default!r}")
        st.session_state[key] = value
    return key


_MD_ALWAYS = re.compile(r"([\\`*\[\]<$~])")  # links, code, emphasis, HTML / autolinks, maths, strikethrough
_MD_EDGE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")  # intraword _ is never emphasis
_MD_SHORTCODE = re.compile(r":(?=[\w/])")  # :emoji: / :material/icon: / :red[...] / http://
# GFM links bare addresses (www.x.y, http://x.y, a@b.c) in the rendered text, after escapes are
# resolved: a zero-width space after the scheme / www / @ breaks the pattern, the text reads the same
_MD_AUTOLINK = re.compile(r"(?i)(?:\b(?:www|https?|ftp|mailto|xmpp)(?=[.:])|@)")
_MD_LINE_START = re.compile(r"^(\s*)([#>+\-=|]|\d+(?=[.)]))")  # headings, quotes, lists at the start


def plain(text: object) -> str:
    """Text shown literally by st.markdown / st.error / st.toast (user-given names, URL values, errors).

    The characters Markdown (with Streamlit's extensions) would act on are backslash-escaped, only
    where they would act, so ordinary text reads unchanged: ``[x](http://e)`` stays text (no link;
    bare addresses get a zero-width space so they are not linked either), ``:red[...]``,
    ``:smile:`` and ``$...$`` stay text, ``*a*`` stays starred, HTML is never interpreted; newlines
    become spaces (one message, one line).
    """
    out = " ".join(str(text).split())
    out = _MD_AUTOLINK.sub(lambda m: m.group(0) + "\u200b", out)
    out = _MD_ALWAYS.sub(lambda m: "\\" + m.group(1), out)
    out = _MD_EDGE_UNDERSCORE.sub(lambda m: "\\_", out)
    out = _MD_SHORTCODE.sub(lambda m: "\\:", out)
    m = _MD_LINE_START.match(out)
    if m:
        lead, mark = m.group(1), m.group(2)
        out = lead + (mark if mark[0].isdigit() else "\\" + mark) + out[m.end() :]
        if mark[0].isdigit():  # "1. " / "1) " would start a list
            out = out[: len(lead) + len(mark)] + "\\" + out[len(lead) + len(mark) :]
    return out


def url_list_state(page: str, name: str, valid: Sequence[str], default: Sequence[str] = ()) -> str:
    """Seed a multi-choice setting from a comma-separated URL value once; returns its session-state key.

    Unknown entries are dropped with a notice naming them and the list used instead.
    """
    key = skey(page, name)
    if key not in st.session_state:
        raw = url_raw(page, name)
        value = list(default)
        if raw is not None:
            asked = [o.strip() for o in raw.split(",") if o.strip()]
            value = list(dict.fromkeys(o for o in asked if o in valid))
            bad = [o for o in asked if o not in valid]
            if bad:
                shown = ", ".join(repr(b[:40]) for b in bad[:5]) + (" ..." if len(bad) > 5 else "")
                notice(
                    f"URL setting {name}: unknown {shown} ignored (valid: {', '.join(valid)}); "
                    f"using {name}={','.join(value)!r}"
                )
        st.session_state[key] = value
    return key


def notice(message: str) -> None:
    """A short message for the user, shown as a toast and kept for the page's notice area.

    The message is shown as plain text (it quotes what the user typed).
    """
    st.toast(plain(message), icon=":material/warning:")
    st.session_state.setdefault("_notices", []).append(message)


def show_notices() -> None:
    """Show (once) the notices raised while reading the URL."""
    for m in st.session_state.pop("_notices", []):
        st.warning(plain(m))


def error_text(e: BaseException, limit: int = 300) -> str:
    """One readable line for an exception: its message (first line, cut), or its type if it has none."""
    msg = " ".join(str(e).split())
    if not msg:
        return type(e).__name__
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def page_failed(title: str, e: BaseException) -> None:
    """The page boundary's message for an unexpected exception; the traceback goes to the server log."""
    import logging

    logging.getLogger("geoflow.app").exception("page %r failed", title)
    if os.environ.get("GEOFLOW_STRICT_PAGES") == "1":  # the test suite: a page bug must fail its test
        raise e
    st.error(
        f"This page hit an internal problem and stopped: {plain(error_text(e))}. "
        "The rest of the app still works: change a setting, or open another page from the sidebar.",
        icon=":material/error:",
    )


def sync_url() -> None:
    """Write this run's URL-backed settings into ``st.query_params``: the link reproduces the view."""
    keys: dict[str, str] = st.session_state.get("_url_keys", {})
    for old in LEGACY_KEYS:
        if old in st.query_params:
            del st.query_params[old]
    for key, name in sorted(keys.items()):
        v = st.session_state.get(key)
        if isinstance(v, bool | int | float | str) and st.query_params.get(name) != str(v):
            st.query_params[name] = str(v)
    keys.clear()


def get(page: str, name: str, default: Any = None) -> Any:
    return st.session_state.get(skey(page, name), default)
