"""The sampler registry: one static table of every sampler and what the app, CLI and benchmarks need.

Declared once, above the sampler modules (``geoflow.samplers``, ``geoflow.predict_project``): no
registration at import time, so importing any sampler module never changes what is offered. Each
entry states its label, default time spacing, NFE at N steps, whether it takes a projection T,
its default strength, and the SDEs it suits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from geoflow import predict_project as pp
from geoflow import samplers as sm
from geoflow.samplers import Projection
from geoflow.score import ScoreFn
from geoflow.sde import SDE, SDE_NAMES, Spacing


@dataclass(frozen=True)
class SamplerInfo:
    """What every caller needs to know about one sampler.

    Attributes:
        name: registry name (CLI ``--sampler``, URL ``sampler=``).
        fn: the pure function ``fn(score_fn, sde, x, ts, *, final_denoise, callback, generator, ...)``.
        label: human-readable name for the UI.
        stochastic: draws noise (uses its generator).
        spacing: its default time grid.
        nfe_per_step: network evaluations per ordinary step.
        final_nfe: evaluations of the last step when it is the final denoising step (score_sde's
            noise removal), including anything the sampler does before it at that time.
        startup_nfe: evaluations spent once, before the first step (a sampler that later reuses
            one step's evaluation in the next).
        takes_projection: takes a projection hook T (``project=``).
        default_strength: the projection strength used when none is given; None: no strength knob.
        sdes: the SDEs it suits (it runs on others, with a warning in the app).
        options: fixed keyword options (e.g. DDIM's eta = 1 for the ancestral entry).
        family: ``"standard"`` or ``"predict_project"``.
    """

    name: str
    fn: Callable[..., torch.Tensor]
    label: str
    stochastic: bool
    spacing: Spacing
    nfe_per_step: int = 1
    final_nfe: int = 1
    startup_nfe: int = 0
    takes_projection: bool = False
    default_strength: float | None = None
    sdes: tuple[str, ...] = SDE_NAMES
    options: tuple[tuple[str, Any], ...] = ()
    family: str = "standard"

    def nfe(self, n: int, final_denoise: bool = True) -> int:
        """Network evaluations of a run of ``n`` steps."""
        if final_denoise:
            return self.startup_nfe + self.nfe_per_step * (n - 1) + self.final_nfe
        return self.startup_nfe + self.nfe_per_step * n

    @property
    def has_strength(self) -> bool:
        """Whether the sampler has a projection strength (every predict-project variant)."""
        return self.default_strength is not None


def _pp(
    name: str,
    fn: Callable[..., torch.Tensor],
    label: str,
    takes_projection: bool = True,
    nfe: tuple[int, int, int] = (2, 1, 0),
) -> SamplerInfo:
    # nfe = (per step, final denoising step, startup): by default 2 per step (predict + project)
    # and 1 for the final denoising step
    return SamplerInfo(
        name,
        fn,
        label,
        True,
        "uniform",
        nfe_per_step=nfe[0],
        final_nfe=nfe[1],
        startup_nfe=nfe[2],
        takes_projection=takes_projection,
        default_strength=pp.DEFAULT_STRENGTHS[name],
        family="predict_project",
    )


_ENTRIES: tuple[SamplerInfo, ...] = (
    SamplerInfo("euler_maruyama", sm.sample_euler_maruyama, "Euler-Maruyama (reverse SDE)", True, "uniform"),
    SamplerInfo("ode_euler", sm.sample_ode_euler, "Probability-flow ODE, Euler", False, "uniform"),
    SamplerInfo("ode_heun", sm.sample_ode_heun, "Probability-flow ODE, Heun", False, "logsnr", 2, 1),
    SamplerInfo("ddim", sm.sample_ddim, "DDIM (eta = 0)", False, "logsnr"),
    SamplerInfo(
        "ddim_eta1", sm.sample_ddim, "DDIM (eta = 1, ancestral)", True, "logsnr", options=(("eta", 1.0),)
    ),
    SamplerInfo("dpm_solver_pp_2m", sm.sample_dpm_solver_pp_2m, "DPM-Solver++(2M)", False, "logsnr"),
    SamplerInfo("unipc", sm.sample_unipc, "UniPC (bh2, order 2)", False, "logsnr"),
    SamplerInfo(
        "predictor_corrector",
        sm.sample_predictor_corrector,
        "Predictor-corrector (EM + Langevin)",
        True,
        "uniform",
        2,
        2,
    ),
    SamplerInfo(
        "annealed_langevin",
        sm.sample_annealed_langevin,
        "Annealed Langevin (VE)",
        True,
        "uniform",
        sdes=("ve",),
    ),
    _pp("predict_project", pp.sample_predict_project, "Predict-project (paper)"),
    _pp(
        "predict_project_ancestral",
        pp.sample_predict_project_ancestral,
        "Predict-project, ancestral (kernel posterior)",
    ),
    _pp(
        "predict_project_langevin",
        pp.sample_predict_project_langevin,
        "Predict-project, Langevin projection onto p_t'",
        takes_projection=False,
    ),
    _pp("predict_project_renoise", pp.sample_predict_project_renoise, "Predict-project, spread restored"),
    # 1 NFE per step (the projection's score is the next predict's), 1 more before the first step
    _pp(
        "predict_project_reuse",
        pp.sample_predict_project_reuse,
        "Predict-project, 1 NFE/step (score reused)",
        takes_projection=False,
        nfe=(1, 1, 1),
    ),
)

SAMPLERS: dict[str, SamplerInfo] = {e.name: e for e in _ENTRIES}
SAMPLER_NAMES: tuple[str, ...] = tuple(SAMPLERS)
STANDARD_SAMPLERS: tuple[str, ...] = tuple(e.name for e in _ENTRIES if e.family == "standard")
PREDICT_PROJECT_SAMPLERS: tuple[str, ...] = tuple(e.name for e in _ENTRIES if e.family == "predict_project")


def get_sampler(name: str) -> SamplerInfo:
    """The registry entry of ``name``; ``ValueError`` listing the valid names otherwise."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid: {', '.join(SAMPLER_NAMES)}")
    return SAMPLERS[name]


def sampler_kwargs(
    info: SamplerInfo, project: Projection | None = None, strength: float | None = None
) -> dict[str, Any]:
    """The keyword options of one call: fixed options, the projection hook, the strength.

    Raises:
        ValueError: a T given to a sampler that takes none, or a strength to one without it.
    """
    opts = dict(info.options)
    if project is not None:
        if not info.takes_projection:
            takers = [n for n in SAMPLER_NAMES if SAMPLERS[n].takes_projection]
            raise ValueError(
                f"sampler {info.name!r} takes no projection T; samplers that do: {', '.join(takers)}"
            )
        opts["project"] = project
    if strength is not None:
        if not info.has_strength:
            raise ValueError(f"sampler {info.name!r} has no projection strength")
        opts["strength"] = float(strength)
    return opts


def sample(
    name: str,
    score_fn: ScoreFn,
    sde: SDE,
    x: torch.Tensor,
    ts: torch.Tensor,
    *,
    project: Projection | None = None,
    strength: float | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Run a named sampler with its registered options (see :func:`sampler_kwargs`).

    ``x`` (B, *D) is the initial noise, ``ts`` the reverse grid; other keywords (``final_denoise``,
    ``callback``, ``generator``) pass through to the sampler function.
    """
    info = get_sampler(name)
    opts = sampler_kwargs(info, project, strength)
    opts.update(kwargs)
    return info.fn(score_fn, sde, x, ts, **opts)
