"""Predict-project benchmark (method.md sections 3-4): does the projection step beat the baselines?

Runs the grid of method.md section 4 on 2-D toys (mixtures with the exact score and with a trained
score network; other toys with the trained network) and on the image sets, every method from the
same initial noise and seeds, and writes the ``projection`` section of ``benchmarks/RESULTS.md``
plus ``benchmarks/projection_quality_vs_nfe.png``.

Usage::

    python benchmarks/projection.py [--quick] [--data NAME[,NAME...]] [--cache FILE] [--report-only]

``--cache`` keeps raw results in a JSON file so data sets can be run one at a time (the report
is built from everything in the cache). Quality: KL(q||p) by the k-NN estimator (mixtures),
sliced W2 (other toys), classifier-feature Fréchet distance (images); each with its floor.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._results import md_table, write_section  # noqa: E402
from geoflow.checkpoints import load_pretrained, read_manifest  # noqa: E402
from geoflow.densities import GaussianMixture, get_density  # noqa: E402
from geoflow.metrics import kl_knn, sliced_w2  # noqa: E402
from geoflow.projection import make_projection  # noqa: E402
from geoflow.samplers import SAMPLERS, SamplerDiverged, sample  # noqa: E402
from geoflow.sde import VESDE, VPSDE  # noqa: E402

PNG = Path(__file__).resolve().parent / "projection_quality_vs_nfe.png"
N_GRID = (10, 20, 40, 100, 1000)
SWEEP_N = (10, 20, 40, 100)  # strengths are swept here; N = 1000 runs the default only
DMU_GRID = (0.5, 1.0, 2.0, 4.0)
ANCESTRAL_GRID = (0.25, 0.5, 1.0)
LANGEVIN_GRID = (0.05, 0.1, 0.2, 0.4)
TOYS = ("three_component", "eight_gaussians", "two_moons", "swiss_roll")
IMAGES = ("digits", "shapes")
BASELINES = (
    "euler_maruyama",
    "ode_euler",
    "ode_heun",
    "ddim",
    "ddim_eta1",
    "dpm_solver_pp_2m",
    "predictor_corrector",
)


@dataclass
class Case:
    """One data set with one score source."""

    data: str
    score: str  # "exact" or the score network's name
    score_fn: Callable
    quality: Callable[[torch.Tensor, int], float]
    floor: float
    shape: tuple[int, ...]
    n: int
    seeds: tuple[int, ...]
    projections: dict = field(default_factory=dict)  # kind -> Projection
    ve_score_fn: Callable | None = None
    metric: str = "KL"


def toy_case(name: str, source: str, n: int, seeds: tuple[int, ...]) -> Case | None:
    sde = VPSDE()
    dens = get_density(name)
    if isinstance(dens, GaussianMixture):
        lp = dens.log_prob

        def quality(x: torch.Tensor, seed: int) -> float:
            return kl_knn(x, lp)

        floor = float(
            np.mean([quality(dens.sample(n, torch.Generator().manual_seed(900 + s)), s) for s in seeds])
        )
        metric = "KL"
    else:
        refs = {s: dens.sample(n, torch.Generator().manual_seed(700 + s)) for s in seeds}

        def quality(x: torch.Tensor, seed: int) -> float:
            return sliced_w2(x, refs[seed], 500, seed)

        floor = float(
            np.mean([quality(dens.sample(n, torch.Generator().manual_seed(800 + s)), s) for s in seeds])
        )
        metric = "sliced W2"
    if source == "exact":
        if not isinstance(dens, GaussianMixture):
            return None
        sf = dens.score_fn(sde)
        case = Case(name, "exact", sf, quality, floor, (2,), n, seeds, metric=metric)
        case.projections = {"exact": make_projection("exact", score_fn=sf, sde=sde)}
        case.ve_score_fn = dens.score_fn(VESDE())
        return case
    model_name = f"{name}-vp"
    if model_name not in read_manifest():
        print(f"  (no pretrained {model_name}: skipped)")
        return None
    model = load_pretrained(model_name, expect_kind="score")
    sf = model.score_fn()
    case = Case(name, model_name, sf, quality, floor, (2,), n, seeds, metric=metric)
    case.projections = {"tweedie": make_projection("tweedie", score_fn=sf, sde=sde)}
    _add_learned(case, model, model_name)
    return case


def _add_learned(case: Case, model, model_name: str) -> None:
    proj_name = f"{model_name}-proj"
    if proj_name in read_manifest():
        proj = load_pretrained(proj_name, expect_kind="projection")
        proj.check_matches(model, model_name)
        case.projections["learned"] = make_projection(
            "learned", score_fn=case.score_fn, sde=VPSDE(), model=proj
        )
    else:
        print(f"  (no pretrained {proj_name}: learned projection skipped)")


def image_case(name: str, n: int, seeds: tuple[int, ...]) -> Case | None:
    from geoflow.images import image_quality, image_shape

    model_name, clf_name = f"{name}-vp", f"{name}-classifier"
    if model_name not in read_manifest() or clf_name not in read_manifest():
        print(f"  (no pretrained {model_name} / {clf_name}: skipped)")
        return None
    model = load_pretrained(model_name, expect_kind="score")
    clf = load_pretrained(clf_name, expect_kind="classifier")

    def quality(x: torch.Tensor, seed: int) -> float:
        return float(image_quality(x.clamp(-1, 1), name, clf)["frechet"])

    floor = float(image_quality(torch.zeros(n, *image_shape(name)), name, clf)["floor"])
    sf = model.score_fn()
    case = Case(name, model_name, sf, quality, floor, image_shape(name), n, seeds, metric="Fréchet (clf)")
    case.projections = {"tweedie": make_projection("tweedie", score_fn=sf, sde=VPSDE())}
    _add_learned(case, model, model_name)
    return case


def methods(
    case: Case, quick: bool
) -> list[tuple[str, str, dict, tuple[float | None, ...], tuple[int, ...]]]:
    """(label, sampler, fixed kwargs, strength grid, N values) for a case."""
    n_all = (10, 20, 40) if quick else N_GRID
    sweep = (10, 20) if quick else SWEEP_N
    out: list = []
    for name in BASELINES:
        # N = 1000 is the reference: Euler-Maruyama only (CPU time), the others up to N = 100
        out.append((name, name, {}, (None,), n_all if name == "euler_maruyama" else sweep))
    out.append(
        ("euler_maruyama (no final denoise)", "euler_maruyama", {"final_denoise": False}, (None,), n_all)
    )
    out.append(
        ("euler_maruyama (NFE-matched 2N)", "euler_maruyama", {}, (None,), tuple(2 * k for k in sweep))
    )
    if case.ve_score_fn is not None:
        out.append(("annealed_langevin (VE)", "annealed_langevin", {"ve": True}, (None,), sweep))
    for kind, proj in case.projections.items():
        for fd in (True, False):
            tag = "" if fd else " (no final denoise)"
            out.append(
                (
                    f"predict_project [{kind}]{tag}",
                    "predict_project",
                    {"project": proj, "final_denoise": fd},
                    DMU_GRID,
                    sweep,
                )
            )
        out.append(
            (
                f"predict_project_ancestral [{kind}]",
                "predict_project_ancestral",
                {"project": proj},
                ANCESTRAL_GRID,
                sweep,
            )
        )
        out.append(
            (
                f"predict_project_renoise [{kind}]",
                "predict_project_renoise",
                {"project": proj},
                DMU_GRID,
                sweep,
            )
        )
    out.append(("predict_project_langevin", "predict_project_langevin", {}, LANGEVIN_GRID, sweep))
    return out


def _run_rows(
    case: Case, label: str, sampler: str, kw: dict, grid: tuple, ns: tuple[int, ...], results: list[dict]
) -> None:
    """Run one method over N values and strengths, appending one row per (N, strength)."""
    done = {
        (r["method"], r["N"], r["strength"])
        for r in results
        if (r["data"], r["score"]) == (case.data, case.score)
    }
    kw = dict(kw)
    is_ve = kw.pop("ve", False)
    vp = VPSDE()
    sde = VESDE() if is_ve else vp
    sf = case.ve_score_fn if is_ve else case.score_fn
    fd = kw.get("final_denoise", True)
    for n_steps in ns:
        for strength in grid:
            if (label, n_steps, strength) in done:
                continue
            opts = dict(kw)
            if strength is not None:
                opts["strength"] = strength
            ts = sde.time_grid(n_steps, SAMPLERS[sampler].spacing)
            vals, t0 = [], time.perf_counter()
            for seed in case.seeds:
                # the same initial noise and Brownian seed for every method
                x = (
                    vp.prior_sample((case.n, *case.shape), torch.Generator().manual_seed(seed))
                    * sde.prior_std()
                )
                try:
                    y = sample(
                        sampler,
                        sf,
                        sde,
                        x,
                        ts,
                        generator=torch.Generator().manual_seed(10_000 + seed),
                        **opts,
                    )
                    vals.append(case.quality(y.float(), seed))
                except SamplerDiverged:
                    vals.append(float("inf"))
            row = {
                "data": case.data,
                "score": case.score,
                "metric": case.metric,
                "floor": case.floor,
                "method": label,
                "sampler": sampler,
                "N": n_steps,
                "nfe": SAMPLERS[sampler].nfe(n_steps, fd),
                "strength": strength,
                "mean": float(np.mean(vals)),
                "std": float(np.std(vals)) if len(vals) > 1 else 0.0,
                "seeds": len(vals),
            }
            results.append(row)
            print(
                f"  {case.data:16s} {case.score:22s} {label:44s} N={n_steps:4d} dmu={strength} "
                f"-> {row['mean']:.4g} ({time.perf_counter() - t0:.1f}s)",
                flush=True,
            )


def run_case(case: Case, quick: bool, results: list[dict], save: Callable[[], None] = lambda: None) -> None:
    """The whole grid of methods for one case (``save()`` after each method, to resume)."""
    for label, sampler, kw, grid, ns in methods(case, quick):
        _run_rows(case, label, sampler, kw, grid, ns, results)
        save()


# --------------------------------------------------------------------------- report
def _best(rows: list[dict], method: str, n: int) -> dict | None:
    c = [r for r in rows if r["method"] == method and r["N"] == n]
    return min(c, key=lambda r: r["mean"]) if c else None


def _fixed(rows: list[dict], method: str, n: int, strength: float | None) -> dict | None:
    c = [r for r in rows if r["method"] == method and r["N"] == n and r["strength"] == strength]
    return c[0] if c else None


def best_fixed_strength(rows: list[dict], method_prefix: str, grid: tuple[float, ...]) -> float:
    """The one strength with the smallest mean relative excess (distance - floor, over EM's) over all N."""
    scores = {}
    for s in grid:
        rel = []
        for r in rows:
            if r["method"].startswith(method_prefix) and r["strength"] == s and "no final" not in r["method"]:
                em = _fixed(
                    [q for q in rows if (q["data"], q["score"]) == (r["data"], r["score"])],
                    "euler_maruyama",
                    r["N"],
                    None,
                )
                if em is not None:
                    rel.append(
                        math.log(max(r["mean"] - r["floor"], 1e-4) / max(em["mean"] - em["floor"], 1e-4))
                    )
        if rel:
            scores[s] = float(np.mean(rel))
    return min(scores, key=scores.get) if scores else float("nan")


def fmt(r: dict | None, strength: bool = False) -> str:
    if r is None:
        return "-"
    s = f"{r['mean']:.4g}" + (f" ± {r['std']:.2g}" if r["seeds"] > 1 else "")
    if strength and r["strength"] is not None:
        s += f" (dmu {r['strength']:g})"
    return s


def report(results: list[dict], command: str) -> str:
    cases = sorted({(r["data"], r["score"]) for r in results}, key=lambda c: (c[0] not in TOYS, c))
    parts = []
    for data, score in cases:
        rows = [r for r in results if (r["data"], r["score"]) == (data, score)]
        floor, metric = rows[0]["floor"], rows[0]["metric"]
        ns = sorted({r["N"] for r in rows if r["method"] == "euler_maruyama"})
        methods_ = [m for m in dict.fromkeys(r["method"] for r in rows) if not m.startswith("train seconds")]
        trained = [
            f"{r['method'][15:-1]}: {r['mean']:.0f} s"
            for r in rows
            if r["method"].startswith("train seconds")
        ]
        table = []
        for m in methods_:
            cells = []
            for n in ns:
                b = _best(rows, m, n)
                cells.append(fmt(b, strength=True) + (f" [{b['nfe']}]" if b else ""))
            table.append([m, *cells])
        parts.append(
            f"### {data}, score: {score} — {metric}, floor {floor:.4g} (seeds: {rows[0]['seeds']})\n\n"
            "Best strength per N from the grid shown in parentheses; [NFE].\n\n"
            + (f"Training time of T ({', '.join(trained)}).\n\n" if trained else "")
            + md_table(["method", *[f"N={n}" for n in ns]], table)
        )
    return "\n\n".join(parts)


def summaries(results: list[dict]) -> tuple[str, dict]:
    """The paper comparison, the strong and NFE-matched baselines, the goals."""
    cases = sorted({(r["data"], r["score"]) for r in results}, key=lambda c: (c[0] not in TOYS, c))
    paper, strong, goals = [], [], []
    facts: dict = {}
    for data, score in cases:
        rows = [r for r in results if (r["data"], r["score"]) == (data, score)]
        floor = rows[0]["floor"]
        kinds = sorted({m.split("[")[1].split("]")[0] for m in (r["method"] for r in rows) if "[" in m})

        def ex(r: dict | None, floor: float = floor) -> float:
            return r["mean"] - floor if r is not None else float("nan")

        for n in (20, 40, 100):
            em_weak = _fixed(rows, "euler_maruyama (no final denoise)", n, None)
            em = _fixed(rows, "euler_maruyama", n, None)
            em2 = _fixed(rows, "euler_maruyama (NFE-matched 2N)", 2 * n, None)
            for k in kinds:
                pw = _best(rows, f"predict_project [{k}] (no final denoise)", n)
                ps = _best(rows, f"predict_project [{k}]", n)
                if em_weak and pw:
                    paper.append(
                        [
                            data,
                            score,
                            k,
                            n,
                            fmt(em_weak),
                            fmt(pw, True),
                            f"{ex(em_weak) / max(ex(pw), 1e-9):.2f}x",
                        ]
                    )
                if em and ps:
                    strong.append(
                        [
                            data,
                            score,
                            k,
                            n,
                            fmt(em),
                            fmt(em2),
                            fmt(ps, True),
                            f"{ex(em) / max(ex(ps), 1e-9):.2f}x",
                            f"{ex(em2) / max(ex(ps), 1e-9):.2f}x",
                        ]
                    )
        em20 = _fixed(rows, "euler_maruyama", 20, None)
        proj_methods = [
            m
            for m in dict.fromkeys(r["method"] for r in rows)
            if m.startswith("predict_project") and "no final" not in m
        ]
        best20 = min(
            (b for m in proj_methods if (b := _best(rows, m, 20))), key=lambda r: r["mean"], default=None
        )
        em1000 = _fixed(rows, "euler_maruyama", 1000, None)
        all10 = [
            b
            for m in dict.fromkeys(r["method"] for r in rows)
            if "no final" not in m and "NFE-matched" not in m and (b := _best(rows, m, 10))
        ]
        best10 = min(all10, key=lambda r: r["mean"], default=None)
        g1 = em20 is not None and best20 is not None and ex(best20) <= 0.5 * ex(em20)
        g2 = em1000 is not None and best10 is not None and ex(best10) <= 1.25 * max(ex(em1000), 0.0)
        goals.append(
            [
                data,
                score,
                fmt(em20),
                f"{best20['method']} {fmt(best20, True)}" if best20 else "-",
                "yes" if g1 else "no",
                fmt(em1000),
                f"{best10['method']} {fmt(best10, True)}" if best10 else "-",
                "yes" if g2 else "no",
            ]
        )
        facts[(data, score)] = {"goal_halve": g1, "goal_fast": g2}
    text = (
        "#### The paper's comparison (Euler-Maruyama without the final denoising step vs predict-project, "
        "no final denoise either; best dmu per N)\n\n"
        + md_table(
            ["data", "score", "T", "N", "EM (no denoise)", "predict-project", "gain (excess ratio)"], paper
        )
        + "\n\n#### Against the strong baseline (final denoising step on) and at equal NFE (EM at 2N)\n\n"
        + md_table(
            ["data", "score", "T", "N", "EM", "EM at 2N", "predict-project", "gain vs EM", "gain vs EM 2N"],
            strong,
        )
        + "\n\n#### Goals (distance above floor)\n\n"
        + md_table(
            [
                "data",
                "score",
                "EM N=20",
                "best projection variant N=20",
                "halves EM?",
                "EM N=1000",
                "best sampler N=10",
                "within 1.25x of EM N=1000?",
            ],
            goals,
        )
    )
    return text, facts


def plot(results: list[dict]) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    cases = sorted(
        {(r["data"], r["score"]) for r in results if "T modes" not in r["score"]},
        key=lambda c: (c[0] not in TOYS, c),
    )
    cols = 3
    rows_n = math.ceil(len(cases) / cols)
    fig = make_subplots(rows=rows_n, cols=cols, subplot_titles=[f"{d} ({s})" for d, s in cases])
    palette = [
        "#1f77b4",
        "#ff7f0e",
        "#2ca02c",
        "#d62728",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#7f7f7f",
        "#bcbd22",
        "#17becf",
        "#393b79",
        "#637939",
        "#8c6d31",
        "#843c39",
        "#7b4173",
        "#3182bd",
    ]
    names = list(dict.fromkeys(r["method"] for r in results if "NFE-matched" not in r["method"]))
    color = {m: palette[i % len(palette)] for i, m in enumerate(names)}
    for i, (data, score) in enumerate(cases):
        rows = [r for r in results if (r["data"], r["score"]) == (data, score)]
        rr, cc = i // cols + 1, i % cols + 1
        for m in names:
            pts = [b for n in sorted({r["N"] for r in rows}) if (b := _best(rows, m, n))]
            pts = [p for p in pts if math.isfinite(p["mean"])]
            if not pts:
                continue
            fig.add_trace(
                go.Scatter(
                    x=[p["nfe"] for p in pts],
                    y=[max(p["mean"], 1e-4) for p in pts],
                    mode="lines+markers",
                    name=m,
                    legendgroup=m,
                    showlegend=i == 0,
                    line={"color": color[m], "width": 1.5},
                    marker={"size": 4},
                ),
                row=rr,
                col=cc,
            )
        fl = rows[0]["floor"]
        fig.add_hline(y=max(fl, 1e-4), line_dash="dash", line_color="black", row=rr, col=cc)
        fig.update_xaxes(type="log", title_text="NFE", row=rr, col=cc)
        fig.update_yaxes(type="log", title_text=rows[0]["metric"], row=rr, col=cc)
    fig.update_layout(
        width=1500,
        height=430 * rows_n + 250,
        template="plotly_white",
        title="Quality vs NFE (best strength per N for predict-project; dashed: floor)",
        legend={"orientation": "h", "y": -0.08, "font": {"size": 10}},
    )
    fig.write_image(str(PNG), scale=1)


# --------------------------------------------------------------------------- projection networks
def train_cli(
    source: str, name: str, mode: str, out: Path, steps: int, n_steps: int = 20
) -> tuple[list[str], float]:
    """Run ``geoflow train-projection`` (the command recorded in the manifest); returns (argv, seconds)."""
    from geoflow.cli import main as cli_main

    argv = [
        "train-projection",
        f"--{source}",
        name,
        "--score",
        f"{name}-vp",
        "--mode",
        mode,
        "--steps",
        str(steps),
    ]
    if mode == "fixed_N":
        argv += ["--n-steps", str(n_steps)]
    argv += ["--seed", "0", "--out", str(out)]
    t0 = time.perf_counter()
    if cli_main(argv) != 0:
        raise SystemExit(f"train-projection failed for {name}")
    return argv, time.perf_counter() - t0


def compare_modes(name: str, steps: int, n: int, seeds: tuple[int, ...], results: list[dict]) -> None:
    """Train T once over random step sizes and once for N = 20; measure both the same way."""
    from geoflow.checkpoints import load_model

    case = toy_case(name, "model", n, seeds)
    if case is None:
        return
    model = load_pretrained(f"{name}-vp", expect_kind="score")
    case.projections = {}
    for mode in ("random_dt", "fixed_N"):
        out = Path("/tmp") / f"geoflow-compare-{name}-{mode}.safetensors"
        _, secs = train_cli("density", name, mode, out, steps)
        proj = load_model(out, expect_kind="projection")
        proj.check_matches(model)
        label = "learned random_dt" if mode == "random_dt" else "learned fixed_N=20"
        case.projections[label] = make_projection("learned", score_fn=case.score_fn, sde=VPSDE(), model=proj)
        results.append(
            {
                "data": name,
                "score": case.score,
                "method": f"train seconds [{label}]",
                "N": 0,
                "nfe": 0,
                "strength": None,
                "mean": secs,
                "std": 0.0,
                "seeds": 1,
                "floor": 0.0,
                "metric": "s",
            }
        )
    case.score = f"{case.score} (T modes)"
    for label, proj in case.projections.items():
        for n_steps in (10, 20, 40):
            _run_rows(
                case,
                f"predict_project [{label}]",
                "predict_project",
                {"project": proj},
                DMU_GRID,
                (n_steps,),
                results,
            )
    _run_rows(case, "euler_maruyama", "euler_maruyama", {}, (None,), (10, 20, 40), results)


def ship(source: str, name: str, mode: str, steps: int) -> None:
    """Train and ship ``pretrained/<name>-vp-proj.safetensors`` with its manifest entry."""
    from geoflow.checkpoints import PRETRAINED_DIR, sha256, write_manifest_entry
    from geoflow.projection import DEFAULT_STRENGTH

    out = PRETRAINED_DIR / f"{name}-vp-proj.safetensors"
    argv, secs = train_cli(source, name, mode, out, steps)
    case = toy_case(name, "model", 10_000, (0,)) if source == "density" else image_case(name, 1000, (0,))
    assert case is not None and "learned" in case.projections, "the shipped projection did not load"
    quality: dict = {
        "evaluation": f"N=20, dmu={DEFAULT_STRENGTH:g}, n={case.n}, seed 0, final denoise on",
        "metric": case.metric,
        "train_seconds": round(secs, 1),
    }
    vp = VPSDE()
    x = vp.prior_sample((case.n, *case.shape), torch.Generator().manual_seed(0))
    ts = vp.time_grid(20)
    for label, sampler, opts in (
        ("euler_maruyama", "euler_maruyama", {}),
        ("predict_project_learned", "predict_project", {"project": case.projections["learned"]}),
        ("predict_project_tweedie", "predict_project", {"project": case.projections["tweedie"]}),
    ):
        y = sample(sampler, case.score_fn, vp, x, ts, generator=torch.Generator().manual_seed(10_000), **opts)
        quality[label] = round(case.quality(y.float(), 0), 5)
    cmd = "geoflow " + " ".join(argv).replace(str(PRETRAINED_DIR), "pretrained")
    entry = {
        "kind": "projection",
        "file": out.name,
        "sha256": sha256(out),
        "command": cmd,
        "quality": quality,
        "floor": {case.metric: round(case.floor, 5)},
    }
    write_manifest_entry(f"{name}-vp-proj", entry)
    print(f"shipped {out.name}: {quality}")


def main(argv: list[str] | None = None) -> int:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N <= 40, 2000 points, one seed")
    ap.add_argument("--data", default=None, help="comma-separated data sets (default: all)")
    ap.add_argument("--source", default="exact,model", help="toys: exact and/or model score")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n", type=int, default=10_000, help="2-D sample size")
    ap.add_argument("--n-images", type=int, default=1000)
    ap.add_argument("--cache", default=None, help="JSON file of raw results (read, extended, rewritten)")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--compare-modes", default=None, help="toy: train T random_dt vs fixed_N=20 and compare")
    ap.add_argument("--ship", default=None, help="comma-separated data sets: train + ship <name>-vp-proj")
    ap.add_argument("--ship-mode", default="random_dt")
    ap.add_argument("--train-steps", type=int, default=3000)
    args = ap.parse_args(argv)
    if args.ship:
        for name in args.ship.split(","):
            ship("data" if name in IMAGES else "density", name, args.ship_mode, args.train_steps)
        return 0
    results: list[dict] = []
    cache = Path(args.cache) if args.cache else None
    if cache and cache.exists():
        results = json.loads(cache.read_text())
    wanted = args.data.split(",") if args.data else [*TOYS, *IMAGES]

    def save() -> None:
        if cache:
            cache.write_text(json.dumps(results))

    seeds = (0,) if args.quick else tuple(range(args.seeds))
    n = 2000 if args.quick else args.n
    if args.compare_modes:
        compare_modes(args.compare_modes, args.train_steps, n, seeds, results)
        if cache:
            cache.write_text(json.dumps(results))
    elif not args.report_only:
        for name in wanted:
            if name in TOYS:
                for src in args.source.split(","):
                    case = toy_case(name, src, n, seeds)
                    if case is not None:
                        run_case(case, args.quick, results, save)
                        if cache:
                            cache.write_text(json.dumps(results))
            elif name in IMAGES:
                case = image_case(name, 200 if args.quick else args.n_images, (0,))
                if case is not None:
                    run_case(case, args.quick, results, save)
                    if cache:
                        cache.write_text(json.dumps(results))
            else:
                raise ValueError(f"unknown data set {name!r}; valid: {', '.join((*TOYS, *IMAGES))}")
    if not results:
        print("no results")
        return 1
    summary, _ = summaries(results)
    fixed_pp = best_fixed_strength(results, "predict_project [", DMU_GRID)
    body = (
        f"One fixed dmu for all N (paper's step, smallest mean log excess ratio to EM): **{fixed_pp:g}**.\n\n"
        + summary
        + "\n\n"
        + report(results, "")
    )
    command = "python benchmarks/projection.py " + " ".join(sys.argv[1:] if argv is None else argv)
    write_section("projection", "Predict-project vs the baselines (method.md sections 3-4)", command, body)
    try:
        plot(results)
        print(f"wrote {PNG}")
    except Exception as e:  # noqa: BLE001 - a missing browser must not lose the tables
        print(f"plot failed: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
