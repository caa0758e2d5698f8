#!/usr/bin/env bash
# Runs dtrain's whole test suite in an optimised build (the numeric tests on the real model
# would take many minutes in a debug build).
#
#   bash launch/test.sh                 # every test
#   bash launch/test.sh --filter GGUF   # extra arguments go to `swift test`
set -euo pipefail
cd "$(dirname "$0")/.."
# Open MPI refuses to run as root unless told; CI runs as root.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# -enable-testing lets @testable imports work in the optimised build.
exec swift test -c release -Xswiftc -enable-testing "$@"
