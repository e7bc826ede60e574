"""The projection benchmark stays on the run API: its grid comes from the registry, its rows from
``geoflow.run.run``, its report from the raw rows (tiny sizes; the real grid is benchmarks/projection.py)."""

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import projection as P  # noqa: E402
from benchmarks import projection_report as R  # noqa: E402
from geoflow.registry import PREDICT_PROJECT_SAMPLERS, get_sampler  # noqa: E402


def test_grid_covers_every_projection_variant_and_the_fast_samplers():
    ms = P.methods("three_component", "three_component-vp")
    samplers = {m.sampler for m in ms}
    assert set(PREDICT_PROJECT_SAMPLERS) <= samplers
    assert {"euler_maruyama", "ddim", "dpm_solver_pp_2m", "unipc", "ode_heun"} <= samplers
    em = next(m for m in ms if m.label == "euler_maruyama")
    assert set(em.steps) == {10, 20, 40, 80, 1000}  # N, 2N and the reference
    weak = [m for m in ms if not m.final_denoise]
    assert {m.sampler for m in weak} == {"euler_maruyama", "predict_project"} and all(
        m.steps == (20,) for m in weak
    )
    # the shipped learned network is the default T; the training-free T is measured beside it
    assert {m.projection for m in ms if m.sampler == "predict_project"} == {"learned", "tweedie"}


@pytest.mark.parametrize("n, expect", [(10, 10), (11, 10), (19, 20), (21, 20), (39, 40), (41, 40), (79, 80)])
def test_nfe_budgets(n, expect):
    assert R.bucket(n) == expect


def test_rows_through_run_and_report(tmp_path):
    case = replace(P.toy_case("three_component", "three_component-vp"), n=300)
    key = f"{case.data}|{case.score}"
    cache: dict = {"floors": {key: {"metric": case.metric, "model": case.sha256, **case.floor}}, "rows": []}
    ms = {m.label: m for m in P.methods(case.data, case.score)}
    picks = [("euler_maruyama", 5), ("euler_maruyama", 10), ("unipc", 5), ("predict_project_reuse", 5)]
    for label, n in picks:
        for seed in (0, 1):
            m = replace(ms[label], steps=(n,))
            cache["rows"].append(P.run_row(case, m, n, seed))
    r = cache["rows"][0]
    assert r["nfe"] == r["nfe_registry"] == get_sampler("euler_maruyama").nfe(5) and r["value"] > 0
    reuse = [r for r in cache["rows"] if r["sampler"] == "predict_project_reuse"][0]
    assert reuse["nfe"] == 6 and reuse["strength"] == get_sampler("predict_project_reuse").default_strength
    # the same seed gives the same x_T and Brownian path: rerunning a row reproduces it exactly
    again = P.run_row(case, replace(ms["euler_maruyama"], steps=(5,)), 5, 0)
    assert again["value"] == r["value"]
    path = tmp_path / "cache.json"
    P.save_cache(cache, path)
    body = R.body(json.loads(path.read_text()))
    assert "unipc" in body and "predict_project_reuse" in body and "three_component" in body


def _row(method: str, n: int, nfe: int, value: float, seed: int = 0) -> dict:
    return {"data": "d", "method": method, "N": n, "sampler": method, "family": "standard", "nfe": nfe,
            "final_denoise": True, "strength": None, "value": value, "cpu_s": 0.1, "seed": seed}  # fmt: skip


@pytest.mark.parametrize(
    "em_1000, met, vacuous", [(10.0, True, True), (1.5, False, False), (2.9, True, False)]
)
def test_goal_is_vacuous_when_em_at_1000_steps_is_worse_than_ten_steps(em_1000, met, vacuous):
    """A reference worse than the few-step sampler is flagged, not reported as the goal met."""
    floor = {"metric": "m", "model": "x", "mean": 1.0, "std": 0.0, "draws": 1}
    rows = [_row("unipc", 10, 10, v, s) for s, v in enumerate((3.0, 3.0))]
    rows.append(_row("euler_maruyama", 1000, 1000, em_1000))
    g = R.goal_fast(R.Case("d|m", floor, rows))
    assert g is not None and (g["met"], g["vacuous"]) == (met, vacuous)
