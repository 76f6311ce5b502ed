#!/usr/bin/env bash
# Issue 7's bench table in one run: `trainer bench` with irdistill's fast
# CPU kernels and with candle's reference ops, against PyTorch on the same
# network, machine and thread count (benches/torch_train_step.py:
# ultralytics' own model + loss, and our --dynamic ONNX export rebuilt by
# onnx2torch). A benchmark, not a test: numbers only.
#
#   benches/trainer_vs_torch.sh [MODEL] [IMGSZ] [BATCH] [STEPS]
#
# Defaults: student-p 128 16 10. TORCH_PY: a python with torch, ultralytics,
# onnx2torch and onnx (default python3). THREADS (default 2) applies to both:
# RAYON_NUM_THREADS for candle, torch.set_num_threads for PyTorch.
set -euo pipefail
MODEL=${1:-student-p} IMGSZ=${2:-128} BATCH=${3:-16} STEPS=${4:-10}
THREADS=${THREADS:-2} TORCH_PY=${TORCH_PY:-python3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TRAINER=${TRAINER:-$ROOT/target/release/trainer}
[[ -x $TRAINER ]] || { echo "build first: cargo build --release --bin trainer" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The network exported with a dynamic batch axis, for onnx2torch.
"$TRAINER" train --data synth --model "$MODEL" --imgsz "$IMGSZ" --epochs 1 --batch 8 \
    --synth-train 8 --synth-val 8 --out "$work/run" >/dev/null 2>&1
"$TRAINER" export --weights "$work/run/last.safetensors" --dynamic --out "$work/dyn.onnx" >/dev/null

bench() { RAYON_NUM_THREADS=$THREADS "$TRAINER" bench --model "$MODEL" --imgsz "$IMGSZ" \
    --batch "$BATCH" --steps "$STEPS" "$@" 2>/dev/null | tail -n1; }
fast=$(bench)
reference=$(bench --reference-ops)
torch=$("$TORCH_PY" "$ROOT/benches/torch_train_step.py" --model "$MODEL" --imgsz "$IMGSZ" \
    --batch "$BATCH" --steps "$STEPS" --threads "$THREADS" --onnx "$work/dyn.onnx" 2>/dev/null | tail -n1)

"$TORCH_PY" - "$fast" "$reference" "$torch" <<'PY'
import json, sys
fast, ref, torch = (json.loads(a) for a in sys.argv[1:])
rows = [("candle, irdistill kernels", fast), ("candle, reference ops", ref)]
rows += [(f"PyTorch {r['torch']} ({r['reference']})", r) for r in torch["results"]]
t_ul = torch["results"][0]["median_ms_per_step"]
print(f"{'':34} {'ms/step (median)':>17} {'min':>8} {'img/s':>7} {'× PyTorch':>10}")
for name, r in rows:
    m = r["median_ms_per_step"]
    print(f"{name:34} {m:17.1f} {r['min_ms_per_step']:8.1f} {r['images_per_s']:7.1f} {m / t_ul:10.2f}")
print(json.dumps({"candle_fast": fast, "candle_reference": ref, "torch": torch["results"],
                  "ratio_fast_vs_ultralytics": fast["median_ms_per_step"] / t_ul}))
PY
