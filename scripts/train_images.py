"""Train, measure and ship an image set's score model and projection network (pretrained/ + manifest).

Usage::

    python scripts/train_images.py digits --steps 8000 --batch-size 128 [--proj-steps 2000] [--no-ship]

It trains the U-Net of ``geoflow.train.image_unet_config`` by denoising score matching, then the
projection network warm-started from it (method.md section 3), and measures on 1000 samples:
the classifier-feature Fréchet distance (the set's shipped classifier) of Euler-Maruyama at
N = 1000 and of DPM-Solver++(2M) at N = 20, beside the train-vs-test floor, and the memorisation
check (nearest-train / nearest-held-out distance ratio against the held-out reference). A model
that memorises is refused (not shipped) unless ``--ship-anyway``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from geoflow.checkpoints import PRETRAINED_DIR, load_pretrained, save_model, sha256, write_manifest_entry  # noqa: E402
from geoflow.images import load_image_set  # noqa: E402
from geoflow.metrics import image_quality, memorisation  # noqa: E402
from geoflow.run import RunSpec, model_source, run  # noqa: E402
from geoflow.sde import VPSDE  # noqa: E402
from geoflow.train import EDM_P_MEAN, TrainConfig, data_fn_from_tensor, train_image_score, train_projection  # noqa: E402

N_EVAL = 1000


def evaluate(name: str, model, proj=None) -> dict:
    """Fréchet distance (EM N=1000, DPM N=20, predict-project N=20) and memorisation of a model."""
    clf = load_pretrained(f"{name}-classifier")
    src = model_source(model, f"train:{name}", name, proj)
    out: dict = {"n_samples": N_EVAL}
    cases = [("euler_maruyama", 1000), ("dpm_solver_pp_2m", 20), ("euler_maruyama", 20)]
    if proj is not None:
        cases.append(("predict_project", 20))
    final = None
    for sampler, n in cases:
        t0 = time.perf_counter()
        spec = RunSpec(
            data=name, score="session", sampler=sampler, steps=n, n=N_EVAL, start="prior", record=0
        )
        x = torch.from_numpy(run(spec, source=src).final)
        q = image_quality(x, name, clf)
        out[f"{sampler} N={n}"] = {
            "frechet": round(q["frechet"], 4),
            "confidence": round(q["confidence"], 4),
            "class_histogram": [round(v, 3) for v in q["class_histogram"]],
            "seconds": round(time.perf_counter() - t0, 1),
        }
        out["floor"] = round(q["floor"], 4)
        if sampler == "euler_maruyama" and n == 1000:
            final = x
        print(sampler, n, out[f"{sampler} N={n}"], "floor", out["floor"], flush=True)
    train, _ = load_image_set(name, "train")
    test, _ = load_image_set(name, "test")
    mem = memorisation(final, train, test)
    out["memorisation"] = {
        k: (round(v, 4) if isinstance(v, float) else v)
        for k, v in mem.items()
        if k
        in ("median_ratio", "reference_median_ratio", "copy_fraction", "reference_copy_fraction", "memorises")
    }
    print("memorisation", out["memorisation"], flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--proj-steps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--param", choices=("eps", "edm"), default="eps", help="the network output's reading")
    ap.add_argument("--base-ch", type=int, default=None, help="U-Net width (default: the set's)")
    ap.add_argument(
        "--p-mean",
        type=float,
        default=EDM_P_MEAN,
        help=f"--param edm: mean of log(sigma/alpha) of the training noise levels (EDM's {EDM_P_MEAN})",
    )
    ap.add_argument("--no-ship", action="store_true")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write the files and their manifest entries (<name>.entry.json) here instead of shipping",
    )
    ap.add_argument("--ship-anyway", action="store_true", help="ship even a memorising model")
    args = ap.parse_args(argv)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    cmd = "python scripts/train_images.py " + " ".join(argv if argv is not None else sys.argv[1:])
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, ema=args.ema, seed=args.seed)
    t0 = time.perf_counter()

    def progress(step: int, total: int, loss: float) -> None:
        if step % 500 == 0 or step == total:
            print(f"score {step}/{total} loss {loss:.4f} {time.perf_counter() - t0:.0f}s", flush=True)

    model, summary = train_image_score(
        args.data, VPSDE(), cfg, progress, param=args.param, base_ch=args.base_ch, p_mean=args.p_mean
    )
    score_s = time.perf_counter() - t0
    train, _ = load_image_set(args.data, "train")
    t1 = time.perf_counter()
    pcfg = TrainConfig(
        steps=args.proj_steps, batch_size=args.batch_size, lr=1e-3, ema=args.ema, seed=args.seed
    )
    proj = train_projection(model, data_fn_from_tensor(train), pcfg, score_name=f"{args.data}-vp")
    proj_s = time.perf_counter() - t1
    quality = evaluate(args.data, model, proj)
    print(json.dumps({"score_seconds": round(score_s), "proj_seconds": round(proj_s)}), flush=True)
    if args.no_ship:
        return 0
    if quality["memorisation"]["memorises"] and not args.ship_anyway:
        print("the model memorises its training set: not shipped", flush=True)
        return 1
    for name, obj, kind, extra in (
        (f"{args.data}-vp", model, "score", {"train": {**summary, "seconds": round(score_s)}}),
        (
            f"{args.data}-vp-proj",
            proj,
            "projection",
            {"train": {**proj.meta["train"], "seconds": round(proj_s)}},
        ),
    ):
        path = save_model(obj, (args.out or PRETRAINED_DIR) / f"{name}.safetensors", extra=extra)
        entry = {
            "kind": kind,
            "file": path.name,
            "sha256": sha256(path),
            "command": cmd,
            "quality": quality
            if kind == "score"
            else {"predict_project N=20": quality.get("predict_project N=20")},
            "floor": quality["floor"],
        }
        if args.out is None:
            write_manifest_entry(name, entry)
            print("shipped", name, flush=True)
        else:
            (args.out / f"{name}.entry.json").write_text(json.dumps(entry, indent=1))
            print("candidate written to", path, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
