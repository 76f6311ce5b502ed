#!/usr/bin/env bash
# CI's cross check: builds irdistill for aarch64 (cross/build.sh), runs its
# `detect` under qemu-user on a few images and compares the detections
# with the host build's on the same images (cross/compare_detections.py):
# same boxes within --box-tol px, scores within --score-tol. That catches a
# cross build that links but computes something else (wrong bindings, a
# miscompiled or mis-selected ARM kernel in tract-linalg), which a build
# alone would not.
#
#   cross/ci-aarch64.sh [--model M.onnx] [--images DIR] [--conf C]
#                       [--host-bin PATH] [--trainer PATH] [--tests] [--seeded]
#
#   --model     the ONNX model (default models/student-p.onnx; while that
#               is missing, a seeded random student-p: see seeded_model)
#   --seeded    the seeded random student-p even when the bundled model
#               exists: many confident boxes per image, so more to compare
#   --images    a folder of jpg/png/bmp/ppm images (default: 8 scenes made
#               by `trainer synth`)
#   --conf      detection threshold for both runs (default 0.25)
#   --host-bin  the host's irdistill (default $CARGO_TARGET_DIR/release/
#               irdistill, built with the runtime features when missing)
#   --trainer   the host's trainer, needed for a seeded model or generated
#               images (default $CARGO_TARGET_DIR/release/trainer, built
#               when missing)
#   --tests     also build the runtime's unit tests for aarch64 and run
#               them under qemu
#
# Installs qemu-user-static and libc6-arm64-cross (apt-get, as root) when
# missing. Leaves its files in $CARGO_TARGET_DIR/cross-ci-aarch64/.
# IRDISTILL_QEMU_CPUS: the emulated CPUs (default "cortex-a72 cortex-a76");
# IRDISTILL_CROSS_PROFILE and IRDISTILL_GLIBC as for cross/build.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=cross/lib.sh
source "$ROOT/cross/lib.sh"
TARGET=aarch64-unknown-linux-gnu
# Debian's aarch64 glibc, for qemu's -L: the binary's loader and libc.
SYSROOT=/usr/aarch64-linux-gnu

usage() { sed -n '/^#   cross/,/^# IRDISTILL_CROSS/s/^# \{0,1\}//p' "$0" >&2; exit 2; }

MODEL='' IMAGES='' CONF='' HOST_BIN='' TRAINER='' TESTS=0 SEEDED=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --model) MODEL=${2:?--model needs a path}; shift 2 ;;
        --images) IMAGES=${2:?--images needs a folder}; shift 2 ;;
        --conf) CONF=${2:?--conf needs a number}; shift 2 ;;
        --host-bin) HOST_BIN=${2:?--host-bin needs a path}; shift 2 ;;
        --trainer) TRAINER=${2:?--trainer needs a path}; shift 2 ;;
        --tests) TESTS=1; shift ;;
        --seeded) SEEDED=1; shift ;;
        -h | --help) usage ;;
        *) echo "${0##*/}: unknown argument '$1'" >&2; usage ;;
    esac
done

cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$TARGET_DIR/cross-ci-aarch64
HOST_BIN=${HOST_BIN:-$TARGET_DIR/release/irdistill}
TRAINER=${TRAINER:-$TARGET_DIR/release/trainer}
command -v python3 >/dev/null || die "python3 not found: it compares the detections"
rm -rf "$WORK"
mkdir -p "$WORK"
declare -A took

step() { note "== $*"; step_start=$SECONDS; step_name=$1; }
done_step() { took[$step_name]=$((SECONDS - step_start)); }

# 1. The aarch64 binary, exactly as cross/build.sh makes it for a board.
step build
"$ROOT/cross/build.sh" "$TARGET"
ARM_BIN=$TARGET_DIR/$TARGET/release/irdistill
done_step

# 2. qemu-user runs the ARM binary on this x86 machine; the cross libc6
#    package gives it the aarch64 loader and glibc (2.36 on Debian 12:
#    newer than the 2.31 the binary needs, which is fine).
step qemu-install
apt_install qemu-user-static libc6-arm64-cross
[[ -e $SYSROOT/lib/ld-linux-aarch64.so.1 ]] || die "$SYSROOT/lib/ld-linux-aarch64.so.1 missing (libc6-arm64-cross)"
QEMU=(qemu-aarch64-static -L "$SYSROOT")
QEMU_CPUS=${IRDISTILL_QEMU_CPUS:-cortex-a72 cortex-a76}
"${QEMU[@]}" "$ARM_BIN" --version >/dev/null || die "$ARM_BIN does not start under ${QEMU[*]}"
done_step

# seeded_model DIR: DIR/random.onnx, a student-p with seeded random conv
# weights. One short epoch of training only gives the graph: its scores
# collapse to ~0.01, where a 1e-3 score tolerance tests little. Random
# weights scaled by fan-in (as tests/daemon_common's seeded_model) give
# scores of 0.25-0.7 and some 17 boxes of both classes per image.
seeded_model() {
    local dir=$1
    mkdir -p "$dir"
    python3 -c 'import numpy, onnx' 2>/dev/null || pip_install numpy onnx
    "$TRAINER" train --data synth --model student-p --imgsz 128 --epochs 1 --batch 8 \
        --synth-train 16 --synth-val 4 --seed 7 --out "$dir/run" >"$dir/log" 2>&1 ||
        die "trainer train failed (see $dir/log)"
    "$TRAINER" export --weights "$dir/run/last.safetensors" --out "$dir/trained.onnx" >>"$dir/log" 2>&1 ||
        die "trainer export failed (see $dir/log)"
    python3 - "$dir/trained.onnx" "$dir/random.onnx" <<'EOF' || die "randomizing $dir/trained.onnx failed"
import sys
import numpy as np
import onnx
from onnx import numpy_helper

src, dst = sys.argv[1:]
m = onnx.load(src)
# Only the convolutions' weights and (BatchNorm-folded) biases: the other
# initializers are shapes, split sizes and the DFL bins.
weights = {n.input[1] for n in m.graph.node if n.op_type == "Conv"}
biases = {n.input[2] for n in m.graph.node if n.op_type == "Conv" and len(n.input) > 2}
rng = np.random.default_rng(7)
for init in m.graph.initializer:
    if init.name in weights or init.name in biases:
        a = numpy_helper.to_array(init)
        b = np.sqrt(6.0 * a.shape[0] / a.size) if init.name in weights else 0.5
        init.CopyFrom(numpy_helper.from_array(rng.uniform(-b, b, a.shape).astype(a.dtype), init.name))
onnx.save(m, dst)
EOF
}

# 3. The host binary, the trainer if needed, the model and the images.
step inputs
host_build() { # host_build BIN ARGS...: builds a missing host binary
    local bin=$1
    shift
    [[ -x $bin ]] && return 0
    note "$bin missing: cargo build --release $*"
    nice -n 10 cargo build --release "$@" || die "cargo build --release $* failed"
    [[ -x $bin ]] || die "cargo built, but $bin is still missing (CARGO_TARGET_DIR?)"
}
host_build "$HOST_BIN" --no-default-features --features runtime --bin irdistill
if [[ -z $MODEL && $SEEDED == 0 && -f models/student-p.onnx ]]; then
    MODEL=models/student-p.onnx
elif [[ -z $MODEL ]]; then
    # --seeded, or no bundled model: a seeded random student-p. Its
    # detections are nonsense but deterministic, and the same for both
    # builds if they compute the same, which is all this comparison needs.
    host_build "$TRAINER" --bin trainer
    note "exporting a seeded random student-p (imgsz 128)"
    seeded_model "$WORK/seeded"
    MODEL=$WORK/seeded/random.onnx
fi
[[ -f $MODEL ]] || die "model $MODEL not found"
CONF=${CONF:-0.25}
if [[ -z $IMAGES ]]; then
    host_build "$TRAINER" --bin trainer
    "$TRAINER" synth --out "$WORK/synth" --pairs 8 --seed 3 >"$WORK/synth.log" 2>&1 ||
        die "trainer synth failed (see $WORK/synth.log)"
    IMAGES=$WORK/synth/images/rgb
fi
mapfile -t images < <(find "$IMAGES" -maxdepth 1 -type f \
    \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' -o -iname '*.bmp' -o -iname '*.ppm' \) | sort)
[[ ${#images[@]} -gt 0 ]] || die "no jpg/png/bmp/ppm images in $IMAGES"
done_step

# 4. The same detect on both; one thread count for both so that the runs
#    differ only in the machine code.
DETECT=(detect --model "$MODEL" --conf "$CONF" --threads "$(nproc)")
step host-detect
"$HOST_BIN" "${DETECT[@]}" "${images[@]}" >"$WORK/host.jsonl" || die "host detect failed"
done_step
# Each emulated CPU in turn: tract-linalg picks its kernels by the CPU's
# features at run time. cortex-a72 (Raspberry Pi 4) is plain ARMv8.0;
# cortex-a76 (Pi 5, close to Jetson Orin's A78AE) adds fp16 and dotprod.
# Not qemu's default `max`: its 512-bit SVE2 is on no board here and is
# emulated some 15 times slower.
step qemu-detect
for cpu in $QEMU_CPUS; do
    "${QEMU[@]}" -cpu "$cpu" "$ARM_BIN" "${DETECT[@]}" "${images[@]}" >"$WORK/aarch64-$cpu.jsonl" ||
        die "aarch64 detect under qemu -cpu $cpu failed"
done
done_step

step compare
for cpu in $QEMU_CPUS; do
    note "host vs aarch64 on qemu -cpu $cpu"
    python3 "$ROOT/cross/compare_detections.py" "$WORK/host.jsonl" "$WORK/aarch64-$cpu.jsonl" --conf "$CONF" |
        tee "$WORK/compare-$cpu.txt" ||
        die "the aarch64 build on $cpu disagrees with the host build (above; $WORK/compare-$cpu.txt)"
done
done_step

# 5. Optionally the runtime's unit tests, compiled for aarch64 and run
#    under qemu (cargo would need a runner configured to do that itself).
#    Same profile as the build above, so that its dependencies are reused:
#    only the test harness is compiled and linked.
if [[ $TESTS == 1 ]]; then
    step test-build
    cross_setup "$TARGET"
    mapfile -t tests < <(cross_cargo test --lib --no-run --message-format=json |
        python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])')
    [[ ${#tests[@]} -gt 0 ]] || die "no unit-test binary was built"
    done_step
    step test-run
    for t in "${tests[@]}"; do
        "${QEMU[@]}" -cpu cortex-a72 "$t" --test-threads "$(nproc)" || die "unit tests failed under qemu: $t"
    done
    done_step
fi

summary=
for s in build qemu-install inputs host-detect qemu-detect compare test-build test-run; do
    [[ -n ${took[$s]:-} ]] && summary+=" $s ${took[$s]}s"
done
note "PASS (${#images[@]} images, model $MODEL, conf $CONF); times:$summary"
