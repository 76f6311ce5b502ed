#!/usr/bin/env bash
# Writes systemd/irdistill@.service (one hardened daemon per camera,
# `systemctl enable --now irdistill@yard` reads /etc/irdistill/yard.toml)
# from systemd/irdistill.service, so the two units cannot drift apart:
# only the header comment, the description, the config path and the
# state folder differ. verify.sh checks the committed file is up to date.
# Usage: bash systemd/make-template.sh [OUT] (default: systemd/irdistill@.service)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/irdistill@.service}"
{
    cat <<'HEAD'
# irdistill camera daemon, one instance per camera: irdistill@NAME reads
# /etc/irdistill/NAME.toml and keeps its state (snapshots) in
# /var/lib/irdistill/NAME. Give each camera its own camera.name (its MQTT
# topics and Home Assistant device) and, with HTTP, its own http.listen
# port. Start one: `systemctl enable --now irdistill@yard`; check its
# config first: `irdistill check-config /etc/irdistill/yard.toml`.
# Generated from irdistill.service by make-template.sh: edit that one.
HEAD
    sed -n '/^\[Unit\]/,$p' "$here/irdistill.service" |
        sed -e 's|^Description=irdistill camera daemon|Description=irdistill camera daemon for camera %i|' \
            -e 's|--config /etc/irdistill/config.toml|--config /etc/irdistill/%i.toml|' \
            -e 's|^WorkingDirectory=/var/lib/irdistill$|WorkingDirectory=/var/lib/irdistill/%i|' \
            -e 's|^StateDirectory=irdistill$|StateDirectory=irdistill/%i|' \
            -e 's|`systemctl restart irdistill`|`systemctl restart irdistill@NAME`|'
} > "$out"
