#!/usr/bin/env bash
# One-time setup of a machine for dtrain: Debian packages, the demo model, a release build.
#
#   bash launch/setup.sh
#
# Idempotent: packages already present are skipped by apt, a cached model is reused, the build
# is incremental. Needs root (or sudo) for apt-get on a machine that lacks the packages.
set -euo pipefail
cd "$(dirname "$0")/.."

# --- site-specific values -------------------------------------------------------------------
PACKAGES="libopenmpi-dev openmpi-bin iproute2 nftables iptables libopenblas-dev libhdf5-dev hdf5-tools zlib1g-dev libssl-dev pkg-config unzip python3-pip python3-venv"
# ---------------------------------------------------------------------------------------------

missing=""
for p in $PACKAGES; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup: installing$missing" >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

bash launch/fetch-model.sh >/dev/null
echo "setup: building dtrain (release)" >&2
swift build -c release 2>&1 | tail -n 3 >&2
echo "setup: done; binary at $(swift build -c release --show-bin-path)/dtrain" >&2
