#!/usr/bin/env bash
# The README's second command: builds everything and runs the whole suite
# (unit tests without privileges; integration tests, which need root, skip
# themselves otherwise). Ends with ctest's summary line.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
build=${BERTH_BUILD_DIR:-build}

scripts/install-deps.sh
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C "$build"
cd "$build"
ctest --output-on-failure "$@"
