"""Densities and models of a session: the presets (shared) and the user's own (per session).

The maths of choosing a score lives in ``geoflow.run.resolve_source``; this module only adds what
the session owns (a drawn or uploaded density, a model trained on the Train page).
"""

from __future__ import annotations

import uuid

import cache
import state  # noqa: F401  (puts the repository on sys.path)

from geoflow.checkpoints import read_manifest
from geoflow.densities import DENSITY_NAMES, Density
from geoflow.run import RunSpec, ScoreSource, model_source, pretrained_problem, resolve_source

USER_PREFIX = "mine: "


def user_densities() -> dict[str, Density]:
    """This session's own densities (drawn, uploaded, generated), by name."""
    import streamlit as st

    return st.session_state.setdefault("user_densities", {})


def user_models() -> dict[str, dict]:
    """This session's trained models: ``{density name: {"model", "projection", "id", "summary"}}``."""
    import streamlit as st

    return st.session_state.setdefault("user_models", {})


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def density_choices() -> list[str]:
    return list(DENSITY_NAMES) + [USER_PREFIX + k for k in user_densities()]


def bare_name(name: str) -> str:
    return name[len(USER_PREFIX) :] if name.startswith(USER_PREFIX) else name


def resolve_density(name: str) -> Density:
    """A preset (shared, cached per process) or one of this session's densities."""
    if name.startswith(USER_PREFIX):
        dens = user_densities().get(bare_name(name))
        if dens is None:
            raise ValueError(f"{name!r} is not in this session (make it on the Train your own page)")
        return dens
    return cache.preset_density(name)


def density_key(name: str) -> str:
    """A cache key for a density: presets by name, a session's own by name and a unique id.

    Caches are shared by every session; two sessions may both call their data "my_data".
    """
    if not name.startswith(USER_PREFIX):
        return name
    dens = resolve_density(name)
    return f"{name}@{getattr(dens, 'uid', id(dens))}"


def session_source(name: str) -> ScoreSource | None:
    """This session's trained model for its density ``name``, as a score source."""
    if not name.startswith(USER_PREFIX):
        return None
    mine = user_models().get(bare_name(name))
    if mine is None:
        return None
    return model_source(
        mine["model"],
        f"session:{mine['id']}",
        "your trained model",
        mine.get("projection"),
        resolve_density(name),
    )


def pretrained_notes(spec: RunSpec) -> list[str]:
    """Why a shipped model this spec would use is unavailable (corrupt or mismatched file), and what is
    used instead; empty when nothing is wrong. The other models keep working."""
    if spec.score not in ("auto", "pretrained") or spec.sde != "vp" or spec.data.startswith(USER_PREFIX):
        return []
    try:
        shipped = read_manifest()
    except (OSError, ValueError) as e:
        return [f"the shipped models are unavailable: pretrained/MANIFEST.json cannot be read ({e})"]
    pre = f"{spec.data}-vp"
    notes = []
    if pre in shipped and pretrained_problem(pre):
        instead = (
            "the exact score instead" if spec.score == "auto" and not spec.is_image else "nothing instead"
        )
        notes.append(f"shipped model {pre} unavailable: {pretrained_problem(pre)}; using {instead}")
    elif f"{pre}-proj" in shipped and pretrained_problem(f"{pre}-proj") and spec.info.takes_projection:
        notes.append(
            f"shipped projection network {pre}-proj unavailable: {pretrained_problem(pre + '-proj')}; "
            "projection T 'learned' cannot be used (tweedie can)"
        )
    return notes


def score_source(spec: RunSpec) -> ScoreSource:
    """The score of a 2-D spec (``spec.data`` a density choice), with the session's model if any."""
    if spec.is_image:
        return resolve_source(spec)
    density = resolve_density(spec.data)
    return resolve_source(
        spec, density, session=session_source(spec.data), density_key=density_key(spec.data)
    )
