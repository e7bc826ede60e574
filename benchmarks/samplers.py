"""Sampler benchmark (issue 2, method.md section 4): quality against steps for every core sampler.

For each sampler x N in {10, 20, 40, 100, 1000}: KL(q || p) by the k-NN estimator (n = 10000) on
the Gaussian mixtures, sliced W2 (n = 10000, 500 projections) on every density, exact W2 (POT,
n = 2000) for display; each with its floor (the same number for true samples), mean and spread
over seeds, NFE and wall time. Score sources: the exact mixture score and the shipped trained
model (``<density>-vp``) on the mixtures, the trained model on the other densities. Every method
starts from the same initial noise and uses the same sampler seed for a given seed index.

Then the issue-2 speed target: a 2-D model trained with the shipped model's settings, its
training time, and its KL at Euler-Maruyama N = 1000 against the exact score's (target: at most
0.01 above).

Usage::

    python benchmarks/samplers.py [--quick] [--data NAME[,NAME...]] [--cache FILE] [--report-only]
                                  [--no-speed] [--speed-only]

``--quick``: densities eight_gaussians, asymmetric, two_moons; 3 seeds for N <= 100 and 1 seed at
N = 1000, where only Euler-Maruyama runs (every sampler for eight_gaussians with the exact score);
exact W2 on seed 0 only; speed target on 2 seeds. About 15 min on an idle core, far more on a
shared one. The full run uses every density, every sampler at every N, 5 seeds everywhere and
exact W2 on every seed. ``--sources exact`` or ``trained`` runs one kind of score only.
``--cache`` keeps raw rows in JSON so a run can be resumed or split; the report is built from
everything in the cache.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._results import md_table, write_section  # noqa: E402
from geoflow.checkpoints import (  # noqa: E402
    PRETRAINED_DIR,
    load_model,
    pretrained_path,
    read_config,
    read_manifest,
    sha256,
)
from geoflow.densities import DENSITY_NAMES, GaussianMixture, get_density  # noqa: E402
from geoflow.metrics import exact_w2, kl_knn, sliced_w2, summarize  # noqa: E402
from geoflow.samplers import SAMPLERS, SamplerDiverged, sample  # noqa: E402
from geoflow.sde import VESDE, VPSDE  # noqa: E402
from geoflow.train import TrainConfig, make_score_model_2d, train_score  # noqa: E402

N_GRID = (10, 20, 40, 100, 1000)
CORE = (
    "euler_maruyama",
    "ode_euler",
    "ode_heun",
    "ddim",
    "ddim_eta1",
    "dpm_solver_pp_2m",
    "predictor_corrector",
    "annealed_langevin",
)
QUICK_DATA = ("eight_gaussians", "asymmetric", "two_moons")
SPEED_DATA = ("eight_gaussians", "asymmetric")
N_SAMPLES = 10_000  # KL and sliced W2 (method.md section 4: n >= 10000)
N_EXACT = 2_000  # exact W2, for display
SPEED_TARGET = 0.01  # KL excess of the trained model over the exact score at EM N = 1000


@dataclass(frozen=True)
class Plan:
    """What one run covers."""

    data: tuple[str, ...]
    seeds: tuple[int, ...]  # for N <= 100
    seeds_1000: tuple[int, ...]  # for N = 1000
    w2_seeds: tuple[int, ...]  # exact W2 computed on these seeds only
    all_at_1000: bool  # every sampler at N = 1000 (else: Euler-Maruyama, and all on eight_gaussians exact)
    speed_seeds: tuple[int, ...]  # seeds of the speed-target KL comparison (EM at N = 1000)
    sources: str = "all"  # "exact", "trained" or "all"

    def seeds_for(self, n_steps: int) -> tuple[int, ...]:
        return self.seeds_1000 if n_steps >= 1000 else self.seeds

    def covers(self, name: str, source: str, sampler: str, n_steps: int) -> bool:
        if self.sources != "all" and (source == "exact") != (self.sources == "exact"):
            return False
        if n_steps < 1000 or self.all_at_1000 or sampler == "euler_maruyama":
            return True
        return name == "eight_gaussians" and source == "exact"


def make_plan(quick: bool, data: str | None, sources: str = "all") -> Plan:
    names = tuple(data.split(",")) if data else (QUICK_DATA if quick else DENSITY_NAMES)
    for n in names:
        if n not in DENSITY_NAMES:
            raise SystemExit(f"unknown density {n!r}; valid: {', '.join(DENSITY_NAMES)}")
    if quick:
        return Plan(names, (0, 1, 2), (0,), (0,), False, (0, 1), sources)
    seeds = (0, 1, 2, 3, 4)
    return Plan(names, seeds, seeds, seeds, True, seeds, sources)


# --------------------------------------------------------------------------- score sources
@dataclass
class Source:
    """A score for one density: the exact mixture score or a trained model (VP; VE where exact)."""

    label: str
    vp: Callable
    ve: Callable | None  # annealed Langevin runs on the VE SDE: exact scores only


def shipped_model_path(name: str) -> Path | None:
    """``pretrained/<name>-vp.safetensors``, hash-checked when the manifest lists it.

    A file the integrator has written but not yet entered in the manifest is used as it is (the
    report then gives its sha256).
    """
    model_name = f"{name}-vp"
    if model_name in read_manifest():
        return pretrained_path(model_name)
    path = PRETRAINED_DIR / f"{model_name}.safetensors"
    return path if path.exists() else None


def sources_for(name: str, cache: dict) -> list[Source]:
    dens = get_density(name)
    out = []
    if isinstance(dens, GaussianMixture):
        out.append(Source("exact", dens.score_fn(VPSDE()), dens.score_fn(VESDE())))
    path = shipped_model_path(name)
    if path is None:
        print(f"  ({name}-vp is not shipped yet: trained-model rows skipped)", flush=True)
        return out
    model = load_model(path, expect_kind="score")
    digest = sha256(path)
    known = cache.setdefault("models", {}).setdefault(f"{name}-vp", digest)
    if known != digest:
        raise SystemExit(f"{path.name} changed since the cached rows were made; use a fresh --cache")
    out.append(Source(f"{name}-vp", model.score_fn(), None))
    return out


# --------------------------------------------------------------------------- quality
class Quality:
    """KL (mixtures), sliced W2 and exact W2 of a sample, against fixed per-seed references."""

    def __init__(self, name: str, seeds: tuple[int, ...]) -> None:
        self.dens = get_density(name)
        self.has_kl = isinstance(self.dens, GaussianMixture)
        self.refs = {s: self.dens.sample(N_SAMPLES, torch.Generator().manual_seed(700 + s)) for s in seeds}
        self.refs_w2 = {s: self.dens.sample(N_EXACT, torch.Generator().manual_seed(750 + s)) for s in seeds}

    def __call__(self, x: torch.Tensor, seed: int, with_w2: bool) -> dict[str, float]:
        out: dict[str, float] = {"sw2": sliced_w2(x, self.refs[seed], 500, seed)}
        if self.has_kl:
            out["kl"] = kl_knn(x, self.dens.log_prob)
        if with_w2:
            out["w2"] = exact_w2(x[:N_EXACT], self.refs_w2[seed])
        return out

    def floors(self, seeds: tuple[int, ...], w2_seeds: tuple[int, ...]) -> dict[str, list[float]]:
        """The same numbers for true samples (independent of the references)."""
        fl: dict[str, list[float]] = {"sw2": [], "kl": [], "w2": []}
        for s in seeds:
            x = self.dens.sample(N_SAMPLES, torch.Generator().manual_seed(900 + s))
            for k, v in self(x, s, s in w2_seeds).items():
                fl[k].append(v)
        return fl


# --------------------------------------------------------------------------- runs
def run_one(sampler: str, src: Source, n_steps: int, seed: int) -> tuple[torch.Tensor | None, dict]:
    """One sampling run; the initial noise and the sampler seed depend on ``seed`` only."""
    ve = sampler == "annealed_langevin"
    sde = VESDE() if ve else VPSDE()
    score = src.ve if ve else src.vp
    info = SAMPLERS[sampler]
    ts = sde.time_grid(n_steps, info.spacing)
    x = sde.prior_sample((N_SAMPLES, 2), torch.Generator().manual_seed(1000 + seed))
    nfe = {"n": 0}
    t0 = time.perf_counter()
    try:
        out = sample(
            sampler,
            score,
            sde,
            x,
            ts,
            generator=torch.Generator().manual_seed(2000 + seed),
            callback=lambda d: nfe.__setitem__("n", d["nfe"]),
        )
    except SamplerDiverged as e:
        return None, {"diverged": str(e), "wall": time.perf_counter() - t0}
    return out, {"nfe": nfe["n"], "wall": time.perf_counter() - t0}


def run_grid(plan: Plan, cache: dict) -> None:
    rows = cache.setdefault("rows", {})
    floors = cache.setdefault("floors", {})
    all_seeds = tuple(sorted(set(plan.seeds) | set(plan.seeds_1000)))
    for name in plan.data:
        print(f"== {name}", flush=True)
        quality = Quality(name, all_seeds)
        if name not in floors:
            floors[name] = quality.floors(all_seeds, plan.w2_seeds)
            save_cache(cache)
        for src in sources_for(name, cache):
            for sampler in CORE:
                if sampler == "annealed_langevin" and src.ve is None:
                    continue
                for n_steps in N_GRID:
                    if not plan.covers(name, src.label, sampler, n_steps):
                        continue
                    for seed in plan.seeds_for(n_steps):
                        key = f"{name}|{src.label}|{sampler}|{n_steps}|{seed}"
                        if key in rows:
                            continue
                        x, rec = run_one(sampler, src, n_steps, seed)
                        if x is not None:
                            rec.update(quality(x, seed, seed in plan.w2_seeds))
                        rows[key] = rec
                        print(f"  {key}: {fmt_rec(rec)}", flush=True)
                        save_cache(cache)


def fmt_rec(rec: dict) -> str:
    if "diverged" in rec:
        return "diverged"
    return " ".join(f"{k}={v:.4g}" for k, v in rec.items())


# --------------------------------------------------------------------------- speed target
def training_cost(name: str, probe_steps: int = 300) -> dict:
    """Per-step cost of training with the shipped model's recorded settings, extrapolated.

    A full retrain (6000 steps) is out of reach on the shared machine, so ``probe_steps`` steps run
    with the same network, batch size and data, timed by wall clock and by this process's CPU time
    (one thread: CPU time is what an idle core would need, wall time what this busy one took).
    """
    path = shipped_model_path(name)
    assert path is not None
    saved = read_config(path)
    tr = saved.get("extra", {}).get("train", {})
    net = saved["net"]
    steps = int(tr.get("steps", TrainConfig.steps))
    cfg = TrainConfig(
        steps=probe_steps,
        batch_size=int(tr.get("batch_size", TrainConfig.batch_size)),
        lr=float(tr.get("lr", TrainConfig.lr)),
        ema=float(tr.get("ema", TrainConfig.ema)),
        seed=int(tr.get("seed", 0)),
    )
    dens = get_density(name)
    # as `geoflow train` does: data scale from 10000 samples, fresh minibatches from the density
    data_std = float(dens.sample(10_000, torch.Generator().manual_seed(cfg.seed + 10_000)).std())
    model = make_score_model_2d(VPSDE(), data_std, width=net["width"], depth=net["depth"])
    w0, c0 = time.perf_counter(), time.process_time()
    train_score(model, lambda n, g: dens.sample(n, g), cfg)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    entry = read_manifest().get(f"{name}-vp", {})
    return {
        "steps": steps,
        "probe_steps": probe_steps,
        "wall_full": wall * steps / probe_steps,
        "cpu_full": cpu * steps / probe_steps,
        "shipped_seconds": tr.get("seconds"),
        "settings": f"{net['depth']}x{net['width']} MLP, {steps} steps, batch {cfg.batch_size}",
        "command": entry.get("command", "(not in the manifest yet)"),
        "sha256": sha256(path)[:12],
    }


def speed_target(cache: dict, seeds: tuple[int, ...]) -> None:
    speed = cache.setdefault("speed", {})
    for name in SPEED_DATA:
        path = shipped_model_path(name)
        if path is None:
            print(f"  ({name}-vp not shipped: speed target skipped)", flush=True)
            continue
        print(f"== speed target: {name}", flush=True)
        rec = training_cost(name)
        dens = get_density(name)
        shipped = load_model(path, expect_kind="score")
        kls: dict[str, list[float]] = {"exact": [], "shipped": []}
        for label, fn in (("exact", dens.score_fn(VPSDE())), ("shipped", shipped.score_fn())):
            grid_label = "exact" if label == "exact" else f"{name}-vp"
            for seed in seeds:
                # the grid's run with the same seed is the same computation: reuse it
                done = cache.get("rows", {}).get(f"{name}|{grid_label}|euler_maruyama|1000|{seed}", {})
                if "kl" in done:
                    kls[label].append(done["kl"])
                    continue
                x, _ = run_one("euler_maruyama", Source(label, fn, None), 1000, seed)
                kls[label].append(kl_knn(x, dens.log_prob) if x is not None else float("inf"))
        speed[name] = {**rec, "kl": kls, "seeds": list(seeds)}
        print(f"  {speed[name]}", flush=True)
        save_cache(cache)


# --------------------------------------------------------------------------- report
def ms(values: list[float]) -> str:
    if not values:
        return "-"
    if any(not np.isfinite(v) for v in values):
        return "inf"
    m, s = summarize(values)
    return f"{m:.4g} ± {s:.2g}" if len(values) > 1 else f"{m:.4g}"


def report(cache: dict, plan: Plan) -> str:
    rows, floors = cache.get("rows", {}), cache.get("floors", {})
    parts = [coverage(cache, plan)]
    for name in [n for n in DENSITY_NAMES if n in floors]:
        fl = floors[name]
        srcs = sorted({k.split("|")[1] for k in rows if k.startswith(name + "|")}, key=lambda s: s != "exact")
        head = f"### {name}\n\nFloors (true samples): "
        head += ", ".join(
            f"{lab} {ms(fl[k])}"
            for k, lab in (("kl", "KL"), ("sw2", "sliced W2"), ("w2", "exact W2"))
            if fl.get(k)
        )
        parts.append(head)
        for src in srcs:
            table = []
            for sampler in CORE:
                for n_steps in N_GRID:
                    recs = [v for k, v in rows.items() if k.startswith(f"{name}|{src}|{sampler}|{n_steps}|")]
                    if not recs:
                        continue
                    ok = [r for r in recs if "diverged" not in r]
                    div = len(recs) - len(ok)
                    row = [sampler, n_steps, ok[0]["nfe"] if ok else "-", len(recs)]
                    if name in KL_DATA:
                        row.append(ms([r["kl"] for r in ok]))
                    row += [ms([r["sw2"] for r in ok]), ms([r["w2"] for r in ok if "w2" in r])]
                    row.append(ms([r["wall"] for r in ok]) + (f" ({div} diverged)" if div else ""))
                    table.append(row)
            hdr = ["sampler", "N", "NFE", "seeds"] + (["KL"] if name in KL_DATA else [])
            hdr += ["sliced W2", "exact W2 (n=2000)", "wall s"]
            parts.append(f"Score: **{src}**\n\n" + md_table(hdr, table))
    parts.append(speed_report(cache))
    return "\n\n".join(parts)


KL_DATA = {n for n in DENSITY_NAMES if isinstance(get_density(n), GaussianMixture)}


def coverage(cache: dict, plan: Plan) -> str:
    rows = cache.get("rows", {})
    data = sorted({k.split("|")[0] for k in rows})
    missing = [n for n in DENSITY_NAMES if n not in data]
    srcs = sorted({k.split("|")[1] for k in rows})
    at_1000 = (
        "every sampler"
        if plan.all_at_1000
        else "Euler-Maruyama for every density and score, every sampler for eight_gaussians "
        "with the exact score"
    )
    text = (
        f"What this run covered: densities {', '.join(data) or '(none)'}; score sources {', '.join(srcs)}; "
        f"samplers {', '.join(CORE)} (annealed Langevin on the VE SDE, exact score only: no VE models are "
        f"shipped); N in {list(N_GRID)}; at N = 1000 {at_1000}; seeds {list(plan.seeds)} for N <= 100 and "
        f"{list(plan.seeds_1000)} at N = 1000; n = {N_SAMPLES} for KL and sliced W2 (500 projections), "
        f"exact W2 on n = {N_EXACT} "
        f"for seeds {list(plan.w2_seeds)} only. Mean ± sample standard deviation over seeds. Same initial "
        f"noise (seed 1000 + s) and sampler seed (2000 + s) for every method. Grid spacing: each sampler's "
        f"default (EM, ODE-Euler, PC, annealed Langevin uniform; Heun, DDIM, DPM-Solver++ log-SNR). "
        f"Every sampler ends with the final denoising step. Wall time: one torch thread on a shared "
        f"2-core machine (other jobs running), so compare within a table only."
    )
    if missing:
        text += f"\n\nNot covered by this run: {', '.join(missing)}."
    return text


def speed_report(cache: dict) -> str:
    speed = cache.get("speed", {})
    if not speed:
        return "### Speed target (issue 2)\n\nNot measured in this run (no shipped 2-D models yet)."
    table = []
    for name, s in speed.items():
        ex, sh = s["kl"]["exact"], s["kl"]["shipped"]
        gap = float(np.mean(sh) - np.mean(ex))
        table.append(
            [
                name,
                f"{s['settings']} (sha256 {s['sha256']})",
                s["shipped_seconds"] if s["shipped_seconds"] is not None else "-",
                f"{s['wall_full']:.0f}",
                f"{s['cpu_full']:.0f}",
                ms(ex),
                ms(sh),
                f"{gap:+.4f}",
                "met" if gap <= SPEED_TARGET else "NOT met",
                "met" if s["cpu_full"] <= 30 else "NOT met",
            ]
        )
    seeds = next(iter(speed.values()))["seeds"]
    probe = next(iter(speed.values()))["probe_steps"]
    hdr = [
        "density",
        "model",
        "train s (shipped run, wall)",
        f"train s here, wall (from {probe} steps)",
        f"train s here, CPU (from {probe} steps)",
        "KL exact score",
        "KL shipped model",
        "gap",
        "quality target (gap <= 0.01)",
        "time target (<= 30 s)",
    ]
    cmds = "\n".join(f"- {n}: `{s['command']}`" for n, s in speed.items())
    return (
        "### Speed target (issue 2)\n\n"
        f"Quality: Euler-Maruyama at N = 1000 (final denoising), n = {N_SAMPLES}, seeds {seeds}, KL of the "
        f"shipped model (trained with the recorded settings) against the exact score's, same noise. "
        f"Time: {probe} training steps with the same settings, timed by wall clock and by process CPU "
        f"time on one torch thread, scaled to the full step count; the machine is shared by several "
        f"jobs, so the wall numbers overstate an idle core and the CPU numbers are the better estimate "
        f"of one (they still include cache contention).\n\n"
        + md_table(hdr, table)
        + "\n\nShipped training commands:\n"
        + cmds
    )


# --------------------------------------------------------------------------- main
def save_cache(cache: dict) -> None:
    path = cache.get("_path")
    if path:
        Path(path).write_text(json.dumps({k: v for k, v in cache.items() if k != "_path"}, indent=1))


def main(argv: list[str] | None = None) -> int:
    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="the reduced plan (see the module docstring)")
    p.add_argument("--data", default=None, help="comma-separated density names")
    p.add_argument("--sources", choices=("all", "exact", "trained"), default="all", help="score sources")
    p.add_argument("--cache", default=None, help="JSON file of raw rows (resume / split runs)")
    p.add_argument("--report-only", action="store_true", help="rebuild the report from --cache")
    p.add_argument("--no-speed", action="store_true", help="skip the speed-target measurement")
    p.add_argument("--speed-only", action="store_true", help="only the speed-target measurement")
    args = p.parse_args(argv)
    plan = make_plan(args.quick, args.data, args.sources)
    cache: dict = {}
    if args.cache and Path(args.cache).exists():
        cache = json.loads(Path(args.cache).read_text())
    cache["_path"] = args.cache
    t0 = time.perf_counter()
    if not args.report_only:
        if not args.speed_only:
            run_grid(plan, cache)
        if not args.no_speed:
            speed_target(cache, plan.speed_seeds)
    command = "python benchmarks/samplers.py " + " ".join(argv if argv is not None else sys.argv[1:])
    body = report(cache, plan)
    write_section(
        "samplers", "Samplers: quality vs steps (issue 2, method.md section 4)", command.strip(), body
    )
    print(f"wrote the samplers section of benchmarks/RESULTS.md ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
