# shellcheck shell=bash
# Sourced by cross/build.sh and cross/ci-aarch64.sh (bash, set -euo pipefail):
# `cross_setup TARGET` checks or installs the tools and adds the Rust
# target; `cross_cargo build|test ARGS...` then runs cargo-zigbuild for that
# target; `check_v4l2_layout DIR` checks the generated V4L2 bindings.
# Why: cross/README.md.

CROSS_TARGETS="aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf"

# Pinned, as tested: a new zig has changed its glibc stubs, headers and
# linker before, and a new cargo-zigbuild how it drives them. Change both
# pins together and rerun cross/ci-aarch64.sh and both builds.
ZIGLANG_VERSION=0.17.1
CARGO_ZIGBUILD_VERSION=0.24.1

die() { echo "${0##*/}: error: $*" >&2; exit 1; }
note() { echo "${0##*/}: $*" >&2; }

# The edge build's profile, as --config so that the host's release profile
# (tests, trainer) stays as Cargo.toml has it. strip: symbol tables are
# about 40 % of the file. lto + one codegen unit: tract's generic code is
# instantiated once instead of per crate. opt-level s except tract-linalg
# (the matrix kernels) and irdistill (pixel conversion), whose speed
# matters. IRDISTILL_CROSS_PROFILE=fast keeps strip and those opt-levels
# but drops fat LTO and the single codegen unit: the same CPU time, but
# the last step (irdistill itself, ~7 CPU-minutes) runs on every core
# instead of one; the binary is 25 MiB instead of 19 (aarch64). Sizes and
# build times: cross/README.md.
cross_profile() {
    CROSS_PROFILE=(
        --config 'profile.release.strip=true'
        --config 'profile.release.opt-level="s"'
        --config 'profile.release.package.tract-linalg.opt-level=3'
        --config 'profile.release.package.irdistill.opt-level=3'
    )
    case "${IRDISTILL_CROSS_PROFILE:-edge}" in
        edge) CROSS_PROFILE+=(
            --config 'profile.release.lto="fat"'
            --config 'profile.release.codegen-units=1'
        ) ;;
        fast) ;;
        *) die "IRDISTILL_CROSS_PROFILE must be edge or fast, got '$IRDISTILL_CROSS_PROFILE'" ;;
    esac
}

pip_install() {
    python3 -m pip --version >/dev/null 2>&1 ||
        die "python3 has no pip (Debian: apt-get install python3-pip); needed for: $*"
    note "installing $* from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check --no-input "$@" ||
        # a distribution Python (PEP 668) refuses plain installs
        python3 -m pip install --quiet --disable-pip-version-check --no-input --break-system-packages "$@" ||
        die "pip install $* failed"
}

# apt_install PKG...: installs the Debian packages not yet installed.
apt_install() {
    local missing=() p
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
        die "missing Debian packages: ${missing[*]} (apt-get install them as root)"
    fi
    note "installing ${missing[*]} (apt-get)"
    local log
    log=$(mktemp)
    # dpkg's progress is noise in a CI log; shown only when it fails.
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
        >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; die "apt-get install ${missing[*]} failed"; }
    rm -f "$log"
}

have_libclang() {
    [[ -n ${LIBCLANG_PATH:-} ]] || ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so' ||
        compgen -G '/usr/lib/llvm-*/lib/libclang*.so*' >/dev/null
}

# cross_setup TARGET: sets CROSS_TARGET, GLIBC, READELF, CROSS_PROFILE and
# puts cargo-zigbuild on PATH.
cross_setup() {
    CROSS_TARGET=$1
    case " $CROSS_TARGETS " in
        *" $CROSS_TARGET "*) ;;
        *) die "unknown target '$CROSS_TARGET' (supported: $CROSS_TARGETS)" ;;
    esac
    # The newest glibc the binary may need: 2.31 is Ubuntu 20.04 (JetPack 5);
    # JetPack 6 (22.04: 2.35) and Raspberry Pi OS (bullseye 2.31, bookworm
    # 2.36) are newer or equal.
    GLIBC=${IRDISTILL_GLIBC:-2.31}
    [[ $GLIBC =~ ^2\.[0-9]+$ ]] || die "IRDISTILL_GLIBC must look like 2.31, got '$GLIBC'"
    cross_profile

    command -v cargo >/dev/null || die "cargo not found (install Rust with rustup)"
    command -v rustup >/dev/null || die "rustup not found: it adds the Rust standard library for $CROSS_TARGET"
    command -v python3 >/dev/null || die "python3 not found: zig and cargo-zigbuild come from PyPI"

    # pip puts scripts in the interpreter's scripts folder, or with --user
    # in the user base; neither need be on PATH (pyenv shims, for one, only
    # appear after a rehash).
    local scripts user
    scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null) || scripts=
    user=$(python3 -m site --user-base 2>/dev/null) || user=$HOME/.local
    PATH="$PATH${scripts:+:$scripts}:$user/bin"

    # Both wheels carry prebuilt binaries: zig itself, and cargo-zigbuild
    # (Rust). cargo-zigbuild runs zig as `python3 -m ziglang` before any
    # `zig` on PATH, so that is the one to check.
    [[ $(python3 -m ziglang version 2>/dev/null) == "$ZIGLANG_VERSION" ]] ||
        pip_install "ziglang==$ZIGLANG_VERSION"
    [[ $(cargo-zigbuild --version 2>/dev/null) == "cargo-zigbuild $CARGO_ZIGBUILD_VERSION" ]] ||
        pip_install "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION"
    hash -r
    command -v cargo-zigbuild >/dev/null ||
        die "cargo-zigbuild was installed but is not on PATH ($PATH)"
    [[ $(python3 -m ziglang version 2>/dev/null) == "$ZIGLANG_VERSION" ]] ||
        die "python3 -m ziglang does not run zig $ZIGLANG_VERSION after installing it"

    # bindgen (v4l2-sys-mit) loads libclang at build time.
    if ! have_libclang; then
        [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null && apt_install libclang-dev
        have_libclang || die "libclang not found: bindgen needs it (Debian: apt-get install libclang-dev, or set LIBCLANG_PATH)"
    fi

    # GNU readelf reads ARM ELF files too; llvm-readelf as a fallback.
    if command -v readelf >/dev/null; then READELF=readelf
    elif command -v llvm-readelf >/dev/null; then READELF=llvm-readelf
    else die "readelf not found (Debian: apt-get install binutils)"
    fi

    if ! rustup target list --installed | grep -qx "$CROSS_TARGET"; then
        rustup target add "$CROSS_TARGET" || die "rustup target add $CROSS_TARGET failed"
    fi
    # No BINDGEN_EXTRA_CLANG_ARGS here: cargo-zigbuild sets
    # BINDGEN_EXTRA_CLANG_ARGS_<target> itself to zig's target headers and
    # glibc version (-nostdinc, zig's include list, -D__GLIBC_MINOR__), so
    # bindgen, which parses <linux/videodev2.h> with the host's libclang,
    # sees the target's structs and not /usr/include's x86-64 ones.
    # check_v4l2_layout verifies that after each build.
}

# cross_cargo build|test ARGS...: cargo-zigbuild for the target set up
# above, runtime features, the profile above. The TARGET.2.31 suffix makes
# zig link against that glibc's symbol versions; cargo itself sees the
# plain target, so the output goes to $CARGO_TARGET_DIR/TARGET/release.
cross_cargo() {
    local sub=$1
    shift
    [[ $sub == build ]] && sub=zigbuild
    cargo-zigbuild "$sub" --release --target "$CROSS_TARGET.$GLIBC" \
        --no-default-features --features runtime "${CROSS_PROFILE[@]}" "$@"
}

# newest_glibc BINARY: the newest GLIBC_x.y it asks the dynamic loader for.
newest_glibc() {
    "$READELF" -V --wide "$1" | grep -o 'GLIBC_[0-9][0-9.]*' | sort -uV | tail -n1
}

# check_v4l2_layout TARGET_DIR: the v4l crate computes its ioctl numbers
# from the sizes of the structs bindgen generated, so bindings parsed with
# the host's layouts would build fine and then fail every ioctl on the
# board (ENOTTY). struct v4l2_buffer shows it: its timeval and pointer
# union make it 88 bytes on aarch64 and 68 on armv7 (32-bit time_t in
# glibc 2.31), and bindgen writes the size it saw into its layout test.
check_v4l2_layout() {
    local expect size
    case "$CROSS_TARGET" in
        aarch64-unknown-linux-gnu) expect=88 ;;
        armv7-unknown-linux-gnueabihf) expect=68 ;;
    esac
    # The newest, should an older build with other flags have left one.
    local f bindings=
    for f in "$1/$CROSS_TARGET"/release/build/v4l2-sys-mit-*/out/v4l2_bindings.rs; do
        if [[ -f $f && (-z $bindings || $f -nt $bindings) ]]; then bindings=$f; fi
    done
    [[ -n $bindings ]] || die "no v4l2-sys-mit bindings under $1/$CROSS_TARGET/release/build"
    size=$(grep -A6 '^fn bindgen_test_layout_v4l2_buffer()' "$bindings" | sed -n 's/^ *\([0-9][0-9]*\)usize,$/\1/p' | head -n1)
    [[ $size == "$expect" ]] ||
        die "$bindings: struct v4l2_buffer is ${size:-?} bytes, $CROSS_TARGET's is $expect: bindgen did not parse the target's headers"
    # shellcheck disable=SC2034 # for the caller's report
    V4L2_BUFFER_SIZE=$size
}
