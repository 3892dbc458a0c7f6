#!/usr/bin/env bash
# The README's first command: install what berth needs, build, install
# berth-runtime, berth and berth-monitor into /usr/local/bin, and run busybox
# containers that greet: one through berth-runtime, one through `berth run`.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build berth-runtime berth-cli berth-monitor berth-init
cmake --install build --component Unspecified >/dev/null 2>&1 || cmake --install build >/dev/null

bundle=$(mktemp -d /tmp/berth-hello.XXXXXX)
trap 'rm -rf "$bundle"' EXIT
rmdir "$bundle"
BERTH_RUNTIME=/usr/local/bin/berth-runtime scripts/make-busybox-bundle.sh "$bundle" >/dev/null
cd "$bundle"
# Not exec: the EXIT trap removes the bundle afterwards.
/usr/local/bin/berth-runtime run "hello-$$"
cd "$repo"
/usr/local/bin/berth run --rm busybox echo "Hello from berth run"
