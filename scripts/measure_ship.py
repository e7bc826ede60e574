"""Measure a trained image score model (and its projection network) on a device, then ship both.

Usage (``scripts/train_gpu.sh`` runs it after the torchrun trainings)::

    python scripts/measure_ship.py --data shapes32 --from RUN_DIR [--to pretrained] [--device cuda]
        [--n 1000] [--em-steps 1000] [--steps 20] [--command-score "..."] [--command-proj "..."]

It loads ``RUN_DIR/<data>-vp.safetensors`` and ``RUN_DIR/<data>-vp-proj.safetensors``, samples ``n``
images from the same initial noise with Euler-Maruyama at ``em-steps`` and at ``steps``,
DPM-Solver++(2M) and predict-project (the learned T) at ``steps``, and scores each with the
classifier-feature Fréchet distance of the set's shipped classifier (beside the train-vs-test floor)
and the memorisation check. It writes a PNG grid of samples into RUN_DIR, copies the weights into
``--to`` and writes their manifest entries there (``--to pretrained``: the shipped MANIFEST.json),
and, with ``--results``, the ``gpu_<data>`` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from geoflow.checkpoints import PRETRAINED_DIR, load_model, load_pretrained, read_config, sha256  # noqa: E402
from geoflow.checkpoints import write_manifest_entry as write_shipped_entry  # noqa: E402
from geoflow.export import save_image_grid  # noqa: E402
from geoflow.images import load_image_set  # noqa: E402
from geoflow.metrics import image_quality, memorisation  # noqa: E402
from geoflow.projection import make_projection  # noqa: E402
from geoflow.registry import get_sampler, sample  # noqa: E402

BATCH = 500  # samples per sampler call (memory on a GPU, time per call on a CPU)


def draw(
    name: str, model, proj, steps: int, n: int, device: str, seed: int = 0
) -> tuple[torch.Tensor, float]:
    """``n`` samples (CPU) of one sampler, the noise fixed by ``seed`` (the same for every sampler)."""
    sde, info = model.sde, get_sampler(name)
    ts = sde.time_grid(steps, info.spacing)
    kw: dict = {}
    if info.takes_projection:
        kw["project"] = make_projection("learned", score_fn=model.score_fn(), sde=sde, model=proj)
    out, t0 = [], time.perf_counter()
    shape = tuple(model.meta["shape"])
    for i in range(0, n, BATCH):
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        # the prior on the CPU generator, then moved: a CPU generator cannot draw on a GPU
        x = sde.prior_sample((min(BATCH, n - i), *shape), g).to(device)
        y = sample(name, model.score_fn(), sde, x, ts, generator=g, final_denoise=True, **kw)
        out.append(y.float().cpu())
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return torch.cat(out).clamp(-1, 1), time.perf_counter() - t0


def write_entry(to: Path, name: str, entry: dict) -> None:
    """A manifest entry in ``to``: the shipped manifest for pretrained/, else ``to/MANIFEST.json``."""
    if to.resolve() == PRETRAINED_DIR.resolve():
        write_shipped_entry(name, entry)
        return
    path = to / "MANIFEST.json"
    models = json.loads(path.read_text())["models"] if path.exists() else {}
    models[name] = entry
    path.write_text(json.dumps({"models": dict(sorted(models.items()))}, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="shapes32")
    ap.add_argument("--from", dest="src", required=True, help="the run directory with the weights")
    ap.add_argument("--to", default=str(PRETRAINED_DIR), help="where the weights and manifest go")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--em-steps", type=int, default=1000)
    ap.add_argument("--classifier", help="a classifier file (default: the shipped <data>-classifier)")
    ap.add_argument("--command-score", default="", help="the training command, for the manifest")
    ap.add_argument("--command-proj", default="", help="the projection training command")
    ap.add_argument("--gpu", default="", help="what trained it (for the manifest and RESULTS.md)")
    ap.add_argument("--results", action="store_true", help="write the gpu_<data> section of RESULTS.md")
    ap.add_argument(
        "--skip-memorisation",
        action="store_true",
        help="no memorisation check (it compares every training image with every other: a minute on a CPU)",
    )
    args = ap.parse_args(argv)
    src, to, data = Path(args.src), Path(args.to), args.data
    score_file, proj_file = src / f"{data}-vp.safetensors", src / f"{data}-vp-proj.safetensors"
    model = load_model(score_file, expect_kind="score").to(args.device)
    proj = load_model(proj_file, expect_kind="projection").to(args.device)
    proj.check_matches(model, f"{data}-vp")
    clf = (
        load_model(args.classifier, "classifier")
        if args.classifier
        else load_pretrained(f"{data}-classifier")
    )

    cases = [("euler_maruyama", args.em_steps), ("dpm_solver_pp_2m", args.steps)]
    cases += [("euler_maruyama", args.steps), ("predict_project", args.steps)]
    results, first = [], None
    for name, steps in cases:
        x, secs = draw(name, model, proj, steps, args.n, args.device)
        q = image_quality(x, data, clf)
        info = get_sampler(name)
        results.append(
            {
                **{k: v for k, v in q.items()},
                "sampler": name,
                "N": steps,
                "spacing": info.spacing,
                "final_denoise": True,
                "nfe": info.nfe(steps, True),
                "seed": 0,
                "sample_wall_s": round(secs, 1),
                "device": args.device,
            }
        )
        print(
            f"{name} N={steps}: Fréchet {q['frechet']:.3f} (floor {q['floor']:.3f}), {secs:.1f} s", flush=True
        )
        if first is None:
            first = x
            save_image_grid(x[:64], src / f"{data}-samples.png", nrow=8)
    mem: dict = {"skipped": True}
    if not args.skip_memorisation:
        train, _ = load_image_set(data, "train")
        test, _ = load_image_set(data, "test")
        mem = memorisation(first, train, test)
        mem = {k: v for k, v in mem.items() if not hasattr(v, "shape")}
        print("memorisation", mem, flush=True)

    to.mkdir(parents=True, exist_ok=True)
    train_meta = read_config(score_file).get("extra", {}).get("train", {})
    main_q = {**results[0], "other_samplers": results[1:], "memorisation": mem, "gpu": args.gpu}
    main_q.update({f"train_{k}": v for k, v in train_meta.items() if k in ("steps", "loss", "seconds")})
    by_name = {f"{r['sampler']} N={r['N']}": round(r["frechet"], 4) for r in results}
    for file, kind, entry_q, command in (
        (score_file, "score", main_q, args.command_score),
        (
            proj_file,
            "projection",
            {"evaluation": f"n={args.n}, seed 0, final denoise on", "metric": "Fréchet (clf)", **by_name},
            args.command_proj,
        ),
    ):
        dest = to / file.name
        if dest.resolve() != file.resolve():
            shutil.copyfile(file, dest)
        floor = results[0]["floor"] if kind == "score" else {"Fréchet (clf)": round(results[0]["floor"], 5)}
        entry = {"kind": kind, "file": dest.name, "sha256": sha256(dest), "command": command}
        write_entry(to, dest.stem, {**entry, "quality": entry_q, "floor": floor})
        print(f"wrote {dest} and its manifest entry in {to}", flush=True)
    if args.results:
        from benchmarks._results import md_table, write_section

        rows = [
            [r["sampler"], r["N"], r["nfe"], r["frechet"], r["floor"], r["sample_wall_s"]] for r in results
        ]
        body = (
            f"{args.gpu}; trained by `{args.command_score}` then `{args.command_proj}`; "
            f"training {train_meta.get('seconds', '?')} s, world size {train_meta.get('world_size', 1)}, "
            f"global batch {train_meta.get('global_batch', train_meta.get('batch_size', '?'))}. "
            f"n = {args.n} samples per sampler, same initial noise.\n\n"
            + md_table(["sampler", "N", "NFE", "Fréchet (clf)", "floor", "sample s"], rows)
            + f"\n\nMemorisation (EM N={args.em_steps}): {json.dumps(mem)}"
        )
        write_section(f"gpu_{data}", f"{data} trained on the GPU (issue 12)", "scripts/train_gpu.sh", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
