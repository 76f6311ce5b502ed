#!/usr/bin/env bash
# Checks the systemd unit and the example configuration:
#   1. `systemd-analyze verify` on systemd/irdistill.service installed in a
#      throw-away root (the distribution's units, the built irdistill at
#      /usr/bin/irdistill, the example config at /etc/irdistill/config.toml);
#      any message about the unit fails the check (unknown keys are only
#      warnings for systemd);
#   2. `irdistill check-config` on the example configuration;
#   3. `systemd-analyze security --offline=yes`: prints the exposure score
#      and fails when it is above MAX_EXPOSURE (default 2.0; 0 = locked
#      down, 10 = fully exposed).
# The same for the per-camera template irdistill@.service (as instance
# irdistill@yard, config /etc/irdistill/yard.toml), after checking that it
# is what make-template.sh makes of irdistill.service.
# Binary: $IRDISTILL_BIN, else target/release/irdistill, else it is built
# (`cargo build --release --bin irdistill`). Installs systemd with apt-get
# when systemd-analyze is missing. Usage: bash systemd/verify.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
unit="$here/irdistill.service"
config="$here/irdistill.toml"
max_exposure="${MAX_EXPOSURE:-2.0}"

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "verify: systemd-analyze missing, installing systemd"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
echo "verify: $(systemd-analyze --version | head -n 1)"
version="$(systemd-analyze --version | awk 'NR == 1 { print $2 }')"
if [ "${version%%.*}" -lt 252 ] 2>/dev/null; then
    echo "verify: systemd $version is older than 252 (needed for security --offline)" >&2
    exit 1
fi

bin="${IRDISTILL_BIN:-$repo/target/release/irdistill}"
if [ ! -x "$bin" ]; then
    echo "verify: $bin missing, building it"
    (cd "$repo" && cargo build --release --bin irdistill)
fi

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
template="$here/irdistill@.service"
bash "$here/make-template.sh" "$root/template.service"
if ! diff -u "$template" "$root/template.service"; then
    echo "verify: FAILED: irdistill@.service is not what make-template.sh makes of irdistill.service (run it)" >&2
    exit 1
fi
# The distribution's units (targets the unit refers to), as under /.
units=/usr/lib/systemd/system
[ -d "$units" ] || units=/lib/systemd/system
mkdir -p "$root/usr/lib/systemd" "$root/usr/bin" "$root/etc/irdistill"
cp -a "$units" "$root/usr/lib/systemd/system"
ln -s usr/lib "$root/lib"
install -m 0755 "$bin" "$root/usr/bin/irdistill"
# ExecReload= runs /bin/kill (procps, on every Debian system)
mkdir -p "$root/bin"
if [ -x /bin/kill ]; then cp /bin/kill "$root/bin/kill"; else printf '#!/bin/sh\n' > "$root/bin/kill"; chmod 0755 "$root/bin/kill"; fi
install -m 0644 "$unit" "$root/usr/lib/systemd/system/irdistill.service"
install -m 0644 "$config" "$root/etc/irdistill/config.toml"
install -m 0644 "$template" "$root/usr/lib/systemd/system/irdistill@.service"
install -m 0644 "$config" "$root/etc/irdistill/yard.toml"

check_unit() {
    local name="$1" status out report score warnings escaped
    echo "verify: systemd-analyze verify $name"
    status=0
    out="$(systemd-analyze verify --root="$root" "$name" 2>&1)" || status=$?
    if [ "$status" -ne 0 ] || [ -n "$out" ]; then
        printf '%s\n' "$out" >&2
        echo "verify: FAILED: systemd-analyze verify (exit $status) complained about the unit" >&2
        exit 1
    fi
    echo "verify: unit ok"

    echo "verify: irdistill check-config $config"
    "$bin" check-config "$config"

    echo "verify: systemd-analyze security --offline=yes $name"
    status=0
    report="$(systemd-analyze security --offline=yes --root="$root" "$name" 2>&1)" || status=$?
    escaped="${name//./\\.}"
    score="$(printf '%s\n' "$report" | sed -n "s/.*Overall exposure level for ${escaped}: \\([0-9.]*\\).*/\\1/p")"
    if [ -z "$score" ]; then
        printf '%s\n' "$report" >&2
        echo "verify: FAILED: no exposure score in the report (exit $status)" >&2
        exit 1
    fi
    # Lines that are neither table rows nor the score are warnings about the unit.
    warnings="$(printf '%s\n' "$report" | grep -v -E '^(  NAME|[✓✗] |→ Overall|$)' || true)"
    printf '%s\n' "$report" | grep '^✗' || true
    echo "verify: exposure score $score (maximum allowed $max_exposure)"
    if [ -n "$warnings" ]; then
        printf '%s\n' "$warnings" >&2
        echo "verify: FAILED: systemd-analyze security warned about the unit" >&2
        exit 1
    fi
    if awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s > m) }'; then
        echo "verify: FAILED: exposure $score is above $max_exposure" >&2
        exit 1
    fi
}

check_unit irdistill.service
check_unit irdistill@yard.service
echo "verify: ok"
