#!/usr/bin/env bash
# Train the 32x32 colour image model (shapes32) and its projection network data-parallel over the
# GPUs of this machine, sample it, measure its quality and ship it (weights + manifest entries).
#
#   scripts/train_gpu.sh [--steps N] [--proj-steps N] [--batch-size B] [--lr LR] [--to DIR]
#                        [--run-dir DIR] [--results] [--cpu-smoke]
#
# On a GPU machine: one torchrun process per GPU (nvidia-smi -L), nccl, per-GPU batch B (the global
# batch is B x GPUs), then scripts/measure_ship.py on cuda:0 (n = 1000 samples per sampler) writes
# pretrained/shapes32-vp{,-proj}.safetensors and their MANIFEST.json entries (--to changes where),
# and with --results the gpu_shapes32 section of benchmarks/RESULTS.md. The classifier that judges
# the quality is the shipped shapes32-classifier (trained first if missing).
#
# --cpu-smoke: the same commands with 2 CPU processes (gloo), a few steps, tiny batches, 16 samples
# at N = 3 and no memorisation check, into a temporary directory (nothing in pretrained/ changes):
# what tests/test_train_gpu.py runs on a machine without a GPU.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
DATA=shapes32
STEPS=20000
PROJ_STEPS=4000
BATCH=128
LR=1e-3
TO="$ROOT/pretrained"
RUN_DIR=""
EXTRA=()  # options for measure_ship.py
SMOKE=0
N=1000
EM_STEPS=1000
SAMPLE_N=20

die() { echo "train_gpu.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) STEPS="${2:?}"; shift 2 ;;
    --proj-steps) PROJ_STEPS="${2:?}"; shift 2 ;;
    --batch-size) BATCH="${2:?}"; shift 2 ;;
    --lr) LR="${2:?}"; shift 2 ;;
    --to) TO="${2:?}"; shift 2 ;;
    --run-dir) RUN_DIR="${2:?}"; shift 2 ;;
    --results) EXTRA+=(--results); shift ;;
    --cpu-smoke) SMOKE=1; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ -x "$PY" ] || die "no python at $PY (run 'make setup', or set PYTHON)"

if [ "$SMOKE" = 1 ]; then
  NPROC=2 DEVICE=cpu STEPS=2 PROJ_STEPS=2 BATCH=4 N=16 EM_STEPS=3 SAMPLE_N=3
  EXTRA=(--skip-memorisation)
  WHAT="CPU smoke run (2 gloo processes)"
  RUN_DIR="${RUN_DIR:-$(mktemp -d -t geoflow-gpu-smoke.XXXXXX)}"
  [ "$TO" = "$ROOT/pretrained" ] && TO="$RUN_DIR/shipped"
  export OMP_NUM_THREADS=1 GEOFLOW_THREADS=1
else
  command -v nvidia-smi >/dev/null || die "nvidia-smi not found: no GPU here (--cpu-smoke runs the same commands on the CPU)"
  NPROC="$(nvidia-smi -L | wc -l)"
  [ "$NPROC" -ge 1 ] || die "nvidia-smi lists no GPU"
  DEVICE=cuda
  WHAT="$NPROC x $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
  RUN_DIR="${RUN_DIR:-${TMPDIR:-/tmp}/geoflow-gpu-$(date -u +%Y%m%d-%H%M%S)}"
fi
mkdir -p "$RUN_DIR" "$TO"
echo "train_gpu.sh: $WHAT; run directory $RUN_DIR; shipping into $TO"
cd "$ROOT"

CLF=()
if ! "$PY" -c "import sys; from geoflow.checkpoints import read_manifest; sys.exit('$DATA-classifier' not in read_manifest())"; then
  # the quality judge first (single process: it is small)
  clf_steps=1500; [ "$SMOKE" = 1 ] && clf_steps=2
  "$PY" -m geoflow train-classifier --data "$DATA" --steps "$clf_steps" --seed 0 --device "$DEVICE" \
    --out "$RUN_DIR/$DATA-classifier.safetensors"
  CLF=(--classifier "$RUN_DIR/$DATA-classifier.safetensors")
fi

TORCHRUN=("$PY" -m torch.distributed.run --standalone --nproc-per-node "$NPROC")
SCORE_ARGS=(train --data "$DATA" --sde vp --steps "$STEPS" --batch-size "$BATCH" --lr "$LR" --seed 0
  --device "$DEVICE" --out "$RUN_DIR/$DATA-vp.safetensors")
PROJ_ARGS=(train-projection --data "$DATA" --score "$RUN_DIR/$DATA-vp.safetensors" --mode random_dt
  --steps "$PROJ_STEPS" --batch-size "$BATCH" --seed 0 --device "$DEVICE"
  --out "$RUN_DIR/$DATA-vp-proj.safetensors")
t0=$(date +%s)
"${TORCHRUN[@]}" -m geoflow "${SCORE_ARGS[@]}"
t1=$(date +%s)
"${TORCHRUN[@]}" -m geoflow "${PROJ_ARGS[@]}"
t2=$(date +%s)
echo "train_gpu.sh: score model $((t1 - t0)) s, projection network $((t2 - t1)) s"

launch="torchrun --standalone --nproc-per-node $NPROC -m geoflow"
"$PY" scripts/measure_ship.py --data "$DATA" --from "$RUN_DIR" --to "$TO" --device "${DEVICE/cuda/cuda:0}" \
  --n "$N" --em-steps "$EM_STEPS" --steps "$SAMPLE_N" --gpu "$WHAT" "${CLF[@]}" "${EXTRA[@]}" \
  --command-score "$launch ${SCORE_ARGS[*]}" --command-proj "$launch ${PROJ_ARGS[*]}"
echo "train_gpu.sh: done in $(($(date +%s) - t0)) s; samples in $RUN_DIR/$DATA-samples.png"
