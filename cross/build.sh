#!/usr/bin/env bash
# Cross-builds the device runtime (`irdistill`, features `runtime`, no
# candle) for an ARM Linux board, without Docker: cargo-zigbuild compiles C
# and links with zig, against zig's bundled glibc stubs and headers, so no
# cross gcc or target sysroot is needed.
#
#   cross/build.sh aarch64-unknown-linux-gnu      # Jetson (JetPack 5/6), Pi 3/4/5 64-bit
#   cross/build.sh armv7-unknown-linux-gnueabihf  # Raspberry Pi OS 32-bit
#
# Output: $CARGO_TARGET_DIR/TARGET/release/irdistill (default: the repo's
# target/), stripped. IRDISTILL_GLIBC (default 2.31) caps the glibc symbol
# versions the binary may need; IRDISTILL_CROSS_PROFILE=fast builds without
# fat LTO (see cross/lib.sh). Extra arguments go to cargo (e.g. --locked,
# -j1). Why each step: cross/README.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=cross/lib.sh
source "$ROOT/cross/lib.sh"

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
    echo "usage: cross/build.sh TARGET [cargo args...]   (TARGET: ${CROSS_TARGETS// / or })" >&2
    exit 2
fi
TARGET=$1
shift
cd "$ROOT"
cross_setup "$TARGET"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

note "building irdistill for $TARGET (glibc <= $GLIBC, profile ${IRDISTILL_CROSS_PROFILE:-edge})"
start=$SECONDS
cross_cargo build --bin irdistill "$@"
secs=$((SECONDS - start))

BIN=$TARGET_DIR/$TARGET/release/irdistill
[[ -x $BIN ]] || die "the build finished but $BIN is missing"
check_v4l2_layout "$TARGET_DIR"
GLIBC_NEEDED=$(newest_glibc "$BIN")
SIZE=$(stat -c %s "$BIN")
echo "binary: $BIN"
echo "size:   $SIZE bytes ($(awk -v s="$SIZE" 'BEGIN { printf "%.1f MiB", s / 1048576 }'), stripped)"
echo "glibc:  needs up to $GLIBC_NEEDED (cap GLIBC_$GLIBC)"
echo "v4l2:   struct v4l2_buffer is $V4L2_BUFFER_SIZE bytes in the bindings, as on $TARGET"
echo "time:   ${secs}s"
# A newer symbol than the cap would not load on the oldest boards.
if [[ $(printf '%s\n' "GLIBC_$GLIBC" "$GLIBC_NEEDED" | sort -V | tail -n1) != "GLIBC_$GLIBC" ]]; then
    die "$BIN needs $GLIBC_NEEDED, newer than the cap GLIBC_$GLIBC"
fi
