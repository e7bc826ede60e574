"""URL and session state: one name per setting, read from ``st.query_params`` once, written back.

A page's settings live in ``st.session_state`` under ``"<page>.<name>"`` (pages do not leak settings
into each other) and in the URL under ``<name>``, the same name as the library's (``RunSpec``)
and the CLI's. Links made before the names were unified keep working: :data:`LEGACY_KEYS` maps
the old keys to the new. A bad value in a link falls back to the default with a notice that
names the value used instead; nothing is replaced silently.
"""

from __future__ import annotations

import math
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


def notice(message: str) -> None:
    """A short message for the user, shown as a toast and kept for the page's notice area."""
    st.toast(message)
    st.session_state.setdefault("_notices", []).append(message)


def show_notices() -> None:
    """Show (once) the notices raised while reading the URL."""
    for m in st.session_state.pop("_notices", []):
        st.warning(m)


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
