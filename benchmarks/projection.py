"""Predict-project benchmark (method.md sections 3-4, issue 11): the projection question at equal NFE.

Every run goes through :func:`geoflow.run.run` (the app's and the CLI's path): a ``RunSpec`` with
``start="prior"`` and ``record=0``, so a seed gives the same x_T and Brownian path for every sampler
and N. Samplers, projection kinds and default strengths come from ``geoflow.registry``.

The grid (issue 11), per data set and seed:

* Euler-Maruyama at N = 10, 20, 40 and at 2N (N = 80 is new; 20 and 40 double as 2N for 10, 20);
* Euler-Maruyama at N = 1000, the reference (``--ref-seeds`` seeds);
* DDIM (eta = 0), DPM-Solver++(2M), UniPC, probability-flow ODE Heun at N = 10, 20, 40;
* every predict-project variant of the registry at its default strength and its default T (``auto``:
  the learned network where one is shipped), plus the paper's step with the training-free Tweedie T;
* final denoising on everywhere, and, for the paper's own comparison, Euler-Maruyama and the paper's
  step without it at N = 20.

Quality: KL(q || p) by the k-NN estimator (k = 5, n = 10000) for the 2-D mixtures, floor = the same
estimate on true samples; classifier-feature Fréchet distance (n = 1000) for the image sets, floor =
train-vs-test. Image models also get the memorisation check (nearest-train / nearest-held-out ratio)
on the Euler-Maruyama N = 1000 and DPM-Solver++(2M) N = 20 samples.

Usage::

    python benchmarks/projection.py [--data NAME[,NAME...]] [--seeds 3] [--ref-seeds 3]
                                    [--cache benchmarks/projection_results.json] [--report-only]

Raw rows (one per data set, method, N and seed, with the score model's sha256) live in the JSON
cache, so data sets can be run one at a time and the report rebuilt without rerunning; rows of a
model that has since been retrained are dropped when that data set runs again and ignored by the
report. The report is ``benchmarks/projection_report.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import projection_report  # noqa: E402
from geoflow.checkpoints import read_manifest  # noqa: E402
from geoflow.densities import GaussianMixture, get_density  # noqa: E402
from geoflow.images import IMAGE_SETS, load_image_set  # noqa: E402
from geoflow.metrics import image_quality, kl_knn, memorisation  # noqa: E402
from geoflow.registry import PREDICT_PROJECT_SAMPLERS, STANDARD_SAMPLERS, get_sampler  # noqa: E402
from geoflow.run import RunSpec, pretrained_pair, resolve_source, run  # noqa: E402

CACHE = Path(__file__).resolve().parent / "projection_results.json"
TOYS = ("three_component", "eight_gaussians")
NS = (10, 20, 40)
REF_N = 1000
PAPER_N = 20  # the paper's comparison (no final denoising step) runs at this N
FAST = ("ddim", "dpm_solver_pp_2m", "unipc", "ode_heun")  # the standard few-step samplers of the grid
N_TOY, N_IMAGE = 10_000, 1000
FLOOR_SEEDS = 10  # true samples behind a KL floor
MEMO_ROWS = {("euler_maruyama", REF_N), ("dpm_solver_pp_2m", 20)}  # (method, N) with the memorisation check


# --------------------------------------------------------------------------- the grid
@dataclass(frozen=True)
class Method:
    """One row of the tables: a registry sampler with its T and final-denoising setting."""

    label: str
    sampler: str
    projection: str = "auto"
    final_denoise: bool = True
    steps: tuple[int, ...] = NS

    @property
    def family(self) -> str:
        return get_sampler(self.sampler).family


def projection_kind(data: str, score: str) -> str:
    """What ``projection="auto"`` resolves to for this score (learned where a network is shipped)."""
    spec = RunSpec(data=data, score=score, sampler="predict_project", start="prior", record=0)
    density = None if data in IMAGE_SETS else get_density(data)
    src = resolve_source(spec, density)
    if src.projection_model is not None:
        return "learned"
    return "exact" if src.exact else "tweedie"


def methods(data: str, score: str) -> list[Method]:
    """The issue-11 grid for one data set and score, every choice from the registry."""
    for name in FAST:
        assert name in STANDARD_SAMPLERS, name
    auto = projection_kind(data, score)
    out = [
        Method("euler_maruyama", "euler_maruyama", steps=(*NS, 2 * NS[-1], REF_N)),
        Method("euler_maruyama (no final denoise)", "euler_maruyama", final_denoise=False, steps=(PAPER_N,)),
        *(Method(name, name) for name in FAST),
    ]
    for name in PREDICT_PROJECT_SAMPLERS:
        if not get_sampler(name).takes_projection:
            out.append(Method(name, name))
            continue
        kinds = [auto] + (["tweedie"] if name == "predict_project" and auto != "tweedie" else [])
        out += [Method(f"{name} [{k}]", name, projection=k) for k in kinds]
    out.append(
        Method(
            f"predict_project [{auto}] (no final denoise)",
            "predict_project",
            projection=auto,
            final_denoise=False,
            steps=(PAPER_N,),
        )
    )
    return out


# --------------------------------------------------------------------------- cases and quality
@dataclass
class Case:
    """One data set with its score model and quality measure."""

    data: str
    score: str
    n: int
    metric: str
    sha256: str
    quality: Callable[[torch.Tensor], dict]
    floor: dict

    @property
    def is_image(self) -> bool:
        return self.data in IMAGE_SETS


def model_sha(score: str) -> str:
    """The score model's sha256 (with its projection network's), so a retrained model is noticed."""
    if score == "exact":
        return "exact"
    m = read_manifest()
    proj = m.get(f"{score}-proj", {}).get("sha256", "")
    return m[score]["sha256"][:16] + (f"+{proj[:16]}" if proj else "")


def toy_case(name: str, score: str) -> Case:
    dens = get_density(name)
    if not isinstance(dens, GaussianMixture):
        raise SystemExit(f"{name} is not a Gaussian mixture: no KL with a known log-density")
    vals = [
        kl_knn(dens.sample(N_TOY, torch.Generator().manual_seed(900 + s)), dens.log_prob)
        for s in range(FLOOR_SEEDS)
    ]
    floor = {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)), "draws": FLOOR_SEEDS}

    def quality(x: torch.Tensor) -> dict:
        return {"value": kl_knn(x, dens.log_prob)}

    return Case(name, score, N_TOY, "KL (k-NN)", model_sha(score), quality, floor)


def image_case(name: str) -> Case:
    from geoflow.checkpoints import load_pretrained

    score = f"{name}-vp"
    clf = load_pretrained(f"{name}-classifier", expect_kind="classifier")
    floor: dict = {}

    def quality(x: torch.Tensor) -> dict:
        q = image_quality(x, name, clf)
        floor.update(mean=q["floor"], std=q["floor_std"], draws=5)
        return {
            "value": q["frechet"],
            "confidence": q["confidence"],
            "class_histogram": q["class_histogram"],
        }

    # fills the floor: train-vs-test at the benchmark's sample size (image_quality sizes it to its input)
    quality(load_image_set(name, "train")[0][:N_IMAGE])
    return Case(name, score, N_IMAGE, "Fréchet (classifier features)", model_sha(score), quality, floor)


def make_case(name: str, score_kind: str) -> Case:
    if name in IMAGE_SETS:
        return image_case(name)
    return toy_case(name, "exact" if score_kind == "exact" else f"{name}-vp")


# --------------------------------------------------------------------------- runs
def spec_for(case: Case, m: Method, steps: int, seed: int) -> RunSpec:
    return RunSpec(
        data=case.data,
        score=case.score,
        sampler=m.sampler,
        steps=steps,
        projection=m.projection,
        strength=None,  # the registry default
        final_denoise=m.final_denoise,
        seed=seed,
        n=case.n,
        start="prior",
        record=0,
    )


def run_row(case: Case, m: Method, steps: int, seed: int) -> dict:
    """One run through :func:`geoflow.run.run`, measured: one raw row of the cache."""
    spec = spec_for(case, m, steps, seed)
    w0, c0 = time.perf_counter(), time.process_time()
    traj = run(spec)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    row = {
        "data": case.data,
        "score": case.score,
        "model": case.sha256,
        "method": m.label,
        "sampler": m.sampler,
        "family": m.family,
        "projection": m.projection if spec.info.takes_projection else None,
        "strength": spec.effective_strength(),
        "final_denoise": m.final_denoise,
        "spacing": spec.grid_spacing(),
        "N": steps,
        "nfe": int(traj.nfe),
        "nfe_registry": spec.info.nfe(steps, m.final_denoise),
        "seed": seed,
        "n": case.n,
        "metric": case.metric,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "error": traj.error,
    }
    x = torch.from_numpy(traj.final)
    if traj.error or not bool(torch.isfinite(x).all()):
        row["value"] = None
        row["error"] = traj.error or "non-finite samples"
        return row
    row.update(case.quality(x))
    if case.is_image and (m.label, steps) in MEMO_ROWS:
        train, _ = load_image_set(case.data, "train")
        test, _ = load_image_set(case.data, "test")
        mem = memorisation(x, train, test)
        row["memorisation"] = {
            k: mem[k]
            for k in ("median_ratio", "reference_median_ratio", "copy_fraction", "reference_copy_fraction")
        } | {"memorises": bool(mem["memorises"])}
    return row


def row_key(r: dict) -> tuple:
    return (r["data"], r["score"], r["model"], r["method"], r["N"], r["seed"])


def plan(case: Case, seeds: tuple[int, ...], ref_seeds: tuple[int, ...]) -> list[tuple[Method, int, int]]:
    """(method, N, seed) of a case: the few-step grid over every seed first, then the N = 1000 reference."""
    ms = methods(case.data, case.score)
    few = [(m, n, s) for s in seeds for m in ms for n in m.steps if n < REF_N]
    ref = [(m, n, s) for s in ref_seeds for m in ms for n in m.steps if n >= REF_N]
    return few + ref


def manifest_reference(case: Case, m: Method, steps: int, seed: int) -> dict | None:
    """The EM N = 1000, seed 0 row of an image model from its manifest entry, where the model's shipping
    run (``scripts/train_images.py``) measured exactly this ``RunSpec`` (n = 1000, prior start, seed 0,
    the same classifier); None otherwise. Saves the CPU time of running it again."""
    entry = read_manifest().get(case.score, {})
    q = entry.get("quality", {}).get("euler_maruyama N=1000")
    ok = (
        case.is_image and m.label == "euler_maruyama" and steps == REF_N and seed == 0 and q is not None
        and "train_images.py" in entry.get("command", "")
        and entry["quality"].get("n_samples", N_IMAGE) == case.n
    )  # fmt: skip
    if not ok:
        return None
    spec = spec_for(case, m, steps, seed)
    return {
        "data": case.data, "score": case.score, "model": case.sha256, "method": m.label, "sampler": m.sampler,
        "family": m.family, "projection": None, "strength": None, "final_denoise": True,
        "spacing": spec.grid_spacing(), "N": steps, "nfe": spec.info.nfe(steps, True),
        "nfe_registry": spec.info.nfe(steps, True), "seed": seed, "n": case.n, "metric": case.metric,
        "wall_s": q.get("seconds", 0.0), "cpu_s": 0.0, "error": "", "value": q["frechet"],
        "confidence": q.get("confidence"), "class_histogram": q.get("class_histogram"),
        "memorisation": entry["quality"].get("memorisation"),
        "source": f"manifest ({entry['command']})",
    }  # fmt: skip


def run_case(
    case: Case,
    cache: dict,
    seeds: tuple[int, ...],
    ref_seeds: tuple[int, ...],
    save,
    ref_from_manifest: bool = False,
) -> None:
    rows = cache.setdefault("rows", [])
    stale = [
        r for r in rows if (r["data"], r["score"]) == (case.data, case.score) and r["model"] != case.sha256
    ]
    if stale:
        print(f"  dropping {len(stale)} rows of an earlier {case.score} model", flush=True)
        rows[:] = [r for r in rows if r not in stale]
    cache.setdefault("floors", {})[f"{case.data}|{case.score}"] = {
        "metric": case.metric,
        "model": case.sha256,
        **case.floor,
    }
    save()
    done = {row_key(r) for r in rows}
    todo = [(m, n, s) for m, n, s in plan(case, seeds, ref_seeds)
            if (case.data, case.score, case.sha256, m.label, n, s) not in done]  # fmt: skip
    t_case = time.perf_counter()
    for i, (m, n, s) in enumerate(todo):
        row = (manifest_reference(case, m, n, s) if ref_from_manifest else None) or run_row(case, m, n, s)
        rows.append(row)
        save()
        v = row["value"]
        print(
            f"  [{i + 1}/{len(todo)}] {case.data} {m.label:44s} N={n:4d} seed={s} NFE={row['nfe']:4d} "
            f"-> {'diverged' if v is None else f'{v:.4g}'} ({row['wall_s']:.1f}s, "
            f"{time.perf_counter() - t_case:.0f}s so far)",
            flush=True,
        )


# --------------------------------------------------------------------------- main
def load_cache(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def save_cache(cache: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cache, indent=0, default=_json_default))
    os.replace(tmp, path)


def _json_default(v: object) -> object:
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(type(v))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=",".join((*TOYS, *IMAGE_SETS)), help="comma-separated data sets")
    ap.add_argument("--score", choices=("trained", "exact"), default="trained", help="2-D score source")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..k-1 for N <= 80")
    ap.add_argument("--ref-seeds", type=int, default=3, help="seeds 0..k-1 for Euler-Maruyama at N = 1000")
    ap.add_argument("--cache", default=str(CACHE), help="JSON file of raw rows (read, extended, rewritten)")
    ap.add_argument("--report-only", action="store_true", help="rebuild the report from the cache")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument(
        "--ref-from-manifest",
        action="store_true",
        help="images: take EM N=1000 seed 0 from the manifest where the shipping run measured that same spec",
    )
    args = ap.parse_args(argv)
    cache_path = Path(args.cache)
    cache = load_cache(cache_path)
    cmd = "python benchmarks/projection.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if not args.report_only:
        for name in args.data.split(","):
            if name not in (*TOYS, *IMAGE_SETS):
                raise SystemExit(f"unknown data set {name!r}; valid: {', '.join((*TOYS, *IMAGE_SETS))}")
            case = make_case(name, args.score)
            print(
                f"== {name} ({case.score}, model {case.sha256}; floor {case.floor['mean']:.4g})", flush=True
            )
            pretrained_pair.cache_clear()  # a model retrained while this process runs is re-read
            run_case(case, cache, tuple(range(args.seeds)), tuple(range(args.ref_seeds)),
                     lambda: save_cache(cache, cache_path), args.ref_from_manifest)  # fmt: skip
            cache.setdefault("commands", [])
            if cmd not in cache["commands"]:
                cache["commands"].append(cmd)
            save_cache(cache, cache_path)
    if not cache.get("rows"):
        print("no results in the cache")
        return 1
    projection_report.write(cache, command=cmd, plot=not args.no_plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
