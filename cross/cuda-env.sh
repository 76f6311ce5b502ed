# shellcheck shell=bash
# Source me (bash): `source cross/cuda-env.sh`, then
# `cargo build --release --features cuda`.
#
# Makes a CUDA 13 toolkit available without a system CUDA install, from
# NVIDIA's PyPI wheels, for candle's CUDA backend (features `cuda`):
#   - nvcc for candle-kernels (cudaforge finds it on PATH or under CUDA_HOME),
#   - the CUDA root cudarc's build script reads (CUDA_HOME and friends), with
#     the plain-name .so links and the libcuda.so stub that a link needs,
#   - CUDA_COMPUTE_CAP, since with no GPU there is no nvidia-smi to ask.
# The first run downloads ~700 MB (1.2 GB installed) into IRDISTILL_CUDA_DIR
# (default ~/.cache/irdistill/cuda13); later runs only set variables (offline,
# well under a second).
# Needs python3 with pip (first run only), gcc and g++ (nvcc's host compiler).
# Running the result needs the NVIDIA driver (libcuda.so.1), r580 or newer.
# Executed instead of sourced (`bash cross/cuda-env.sh`) it only installs,
# e.g. to warm a CI cache.
#
# May be sourced under `set -euo pipefail`: errors are reported and returned
# (never `exit`), so under `set -e` the caller stops at a failed `source`,
# and an interactive shell just gets a non-zero status.

if [ -z "${BASH_VERSION:-}" ]; then
    echo "cuda-env.sh: needs bash (source it from bash)" >&2
    # shellcheck disable=SC2317 # exit: when run by sh rather than sourced
    return 1 2>/dev/null || exit 1
fi

# Pinned to 13.0: candle loads its kernels as PTX, which the driver JIT-compiles,
# and a driver only accepts PTX from toolkits up to its own CUDA version, so
# the oldest 13.x runs on the most drivers (r580+). cudarc 0.19 knows 11.4-13.4.
# nvrtc: cudarc links -lnvrtc. The -cu12 wheels ship no nvcc binary.
IRDISTILL_CUDA_SPEC="cuda-toolkit[nvcc,cudart,cccl,cublas,curand,nvrtc]==13.0.3.0"

_icuda_err() { echo "cuda-env.sh: error: $*" >&2; }
_icuda_note() { echo "cuda-env.sh: $*" >&2; }

# _icuda_prepend VAR DIR: DIR first in the colon list VAR, once (re-sourcing
# must not grow PATH).
_icuda_prepend() {
    local cur=":${!1:-}:"
    cur=${cur//:$2:/:}
    cur=${cur#:}
    cur=${cur%:}
    printf -v "$1" '%s' "$2${cur:+:$cur}"
    export "${1?}"
}

# _icuda_stub ROOT: writes ROOT/lib/stubs/libcuda.so. The driver library comes
# with the driver, not with any wheel, yet cudarc links -lcuda. A real toolkit
# ships such a stub in lib64/stubs; this one exports every driver function that
# cuda.h declares (also with per-thread default stream, for the _ptsz/_ptds
# names), the cuProfiler* ones (cudaProfiler.h is in no wheel we install, and
# cudarc declares them for every version), and any that cudarc's bindings name
# (read from the cargo registry when it is there). Each returns
# CUDA_ERROR_STUB_LIBRARY (34). Its soname is libcuda.so.1, so binaries load
# the real driver at run time; the stubs folder is never on LD_LIBRARY_PATH.
_icuda_stub() {
    local root=$1 src hdr=$1/include/cuda.h
    local -a cudarc=()
    src=$(mktemp "${TMPDIR:-/tmp}/libcuda-stub.XXXXXX") || return 1
    # compgen: no match gives no word whatever the caller's nullglob/failglob.
    mapfile -t cudarc < <(compgen -G "${CARGO_HOME:-${HOME:-/nonexistent}/.cargo}/registry/src/*/cudarc-*/src/driver/sys/mod.rs")
    {
        gcc -E -P -x c -I"$root/include" "$hdr" &&
            gcc -E -P -x c -I"$root/include" -DCUDA_API_PER_THREAD_DEFAULT_STREAM "$hdr"
    } | python3 -c '
import os, re, sys
text = sys.stdin.read()
names = set(re.findall(r"\bCUresult\s+(?:CUDAAPI\s+)?(cu[A-Za-z0-9_]+)\s*\(", text))
if len(names) < 300:
    sys.exit("cuda.h: only %d driver functions found" % len(names))
names.update(["cuProfilerInitialize", "cuProfilerStart", "cuProfilerStop"])
for path in sys.argv[1:]:
    if os.path.isfile(path):
        names.update(re.findall(r"load::<_F>\(\"(cu[A-Za-z0-9_]+)\"\)", open(path).read()))
for n in sorted(names):
    print("int %s(void) { return 34; }" % n)
' "${cudarc[@]}" >"$src" &&
        mkdir -p "$root/lib/stubs" &&
        gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$root/lib/stubs/libcuda.so" -x c "$src"
    local rc=$?
    rm -f "$src"
    [[ $rc == 0 ]] || _icuda_err "could not build the libcuda.so stub"
    return "$rc"
}

# _icuda_install DIR: pip-installs the toolkit into DIR, which must not exist.
# Builds in a sibling folder and renames it at the end, so an interrupted run
# leaves nothing that looks finished and a concurrent one loses harmlessly.
_icuda_install() {
    local dir=$1 tmp root f t t0=$SECONDS
    command -v python3 >/dev/null || {
        _icuda_err "python3 not found (Debian: apt-get install python3 python3-pip)"
        return 1
    }
    python3 -m pip --version >/dev/null 2>&1 || {
        _icuda_err "python3 has no pip (Debian: apt-get install python3-pip)"
        return 1
    }
    # Leftovers of interrupted installs (an hour old: not a concurrent one).
    find "${dir%/*}" -maxdepth 1 -name "${dir##*/}.tmp.*" -mmin +60 -exec rm -rf {} + 2>/dev/null
    if ! mkdir -p "${dir%/*}" || ! tmp=$(mktemp -d "$dir.tmp.XXXXXX"); then
        _icuda_err "cannot create a folder next to $dir"
        return 1
    fi
    root=$tmp/nvidia/cu13
    _icuda_note "installing $IRDISTILL_CUDA_SPEC into $dir (about 700 MB download, 1.2 GB on disk; once)"
    # --target: a private folder, so neither the system Python nor PEP 668's
    # EXTERNALLY-MANAGED (pip skips that check for --target) gets in the way.
    # --no-cache-dir: the wheels would otherwise be kept twice.
    if ! PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-input \
        --no-cache-dir --only-binary=:all: --target "$tmp" "$IRDISTILL_CUDA_SPEC"; then
        _icuda_err "pip install $IRDISTILL_CUDA_SPEC failed (network? disk space?)"
        rm -rf "$tmp"
        return 1
    fi
    if [[ ! -x $root/bin/nvcc || ! -f $root/include/cuda.h ]]; then
        _icuda_err "the wheels did not provide $root/bin/nvcc and include/cuda.h (layout changed?)"
        rm -rf "$tmp"
        return 1
    fi
    # The wheels ship only versioned libraries (libcublas.so.13); `-lcublas`
    # needs the unversioned name.
    for f in "$root"/lib/lib*.so.*; do
        [[ -f $f ]] || continue
        t=${f##*/}
        t=${t%%.so.*}.so
        [[ -e $root/lib/$t ]] || ln -s "${f##*/}" "$root/lib/$t"
    done
    _icuda_stub "$root" || {
        rm -rf "$tmp"
        return 1
    }
    echo "$IRDISTILL_CUDA_SPEC" >"$tmp/.irdistill-cuda" || {
        rm -rf "$tmp"
        return 1
    }
    if ! mv -T "$tmp" "$dir" 2>/dev/null; then
        rm -rf "$tmp"
        [[ -f $dir/.irdistill-cuda ]] || {
            _icuda_err "cannot move the toolkit into $dir"
            return 1
        }
    fi
    _icuda_note "installed in $((SECONDS - t0)) s ($(du -sh "$dir" 2>/dev/null | cut -f1))"
}

_icuda_main() {
    local dir=${IRDISTILL_CUDA_DIR:-${HOME:+$HOME/.cache/irdistill/cuda13}}
    [[ -n $dir ]] || {
        _icuda_err "neither IRDISTILL_CUDA_DIR nor HOME is set"
        return 1
    }
    # Absolute (build scripts run elsewhere) and without a trailing slash
    # (the install goes to a sibling folder, then is renamed).
    [[ $dir == /* ]] || dir=$PWD/$dir
    while [[ $dir == */ && $dir != / ]]; do dir=${dir%/}; done
    local root=$dir/nvidia/cu13 stamp=$dir/.irdistill-cuda have="" cap

    # gcc/g++: nvcc compiles the host side with them; the check is cheap and
    # saves a confusing failure nine minutes into candle-kernels' build.
    if ! command -v gcc >/dev/null || ! command -v g++ >/dev/null; then
        _icuda_err "gcc and g++ are needed (nvcc's host compiler; Debian: apt-get install g++)"
        return 1
    fi

    [[ -f $stamp ]] && have=$(<"$stamp")
    if [[ $have != "$IRDISTILL_CUDA_SPEC" ]]; then
        # An empty folder (a freshly created CI cache mount) counts as absent.
        if [[ -e $dir && -n $(ls -A "$dir" 2>/dev/null) ]]; then
            # Only ever delete a folder that this script filled.
            [[ -f $stamp ]] || {
                _icuda_err "$dir exists but is not a toolkit from this script; remove it or set IRDISTILL_CUDA_DIR"
                return 1
            }
            _icuda_note "replacing ${have:-?} in $dir"
            rm -rf "$dir" || return 1
        fi
        _icuda_install "$dir" || return 1
    fi
    [[ -x $root/bin/nvcc && -f $root/lib/stubs/libcuda.so ]] || {
        _icuda_err "$dir is incomplete; remove it and source again"
        return 1
    }

    # cudarc reads any of these for -L (ROOT/lib, ROOT/lib/stubs) and merges
    # all that are set; cudaforge reads CUDA_HOME. All point here so that a
    # system toolkit named in one of them cannot get mixed in.
    export CUDA_HOME=$root CUDA_PATH=$root CUDA_ROOT=$root CUDA_TOOLKIT_ROOT_DIR=$root
    _icuda_prepend PATH "$root/bin"
    # Run time only (cargo run/test on a GPU machine): the executables need
    # libcublas.so.13 and friends from here; libcuda.so.1 comes from the driver.
    _icuda_prepend LD_LIBRARY_PATH "$root/lib"

    # The kernels are built for one GPU generation (PTX for compute_XX, a few
    # as sm_XX code; 90 becomes 90a, which runs on H100/H200 only). Keep the caller's choice,
    # else ask the GPU, else H100/H200. Changing it rebuilds candle-kernels.
    if [[ -z ${CUDA_COMPUTE_CAP:-} ]]; then
        cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null) || cap=""
        cap=${cap%%$'\n'*}
        cap=${cap//[!0-9]/}
        export CUDA_COMPUTE_CAP=${cap:-90}
    fi
    _icuda_note "CUDA $("$root/bin/nvcc" --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\),.*/\1/p') at $root, CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"
}

# Called in a `||` list, which turns the caller's `set -e` off inside it:
# every failure is checked explicitly, reported, and returned.
_icuda_rc=0
_icuda_main || _icuda_rc=$?
unset IRDISTILL_CUDA_SPEC
unset -f _icuda_err _icuda_note _icuda_prepend _icuda_stub _icuda_install _icuda_main
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    exit "$_icuda_rc"
fi
eval "unset _icuda_rc; return $_icuda_rc"
