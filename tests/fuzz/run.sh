#!/usr/bin/env bash
# Runs a fuzz target for a fixed count from the seed corpus (seeds.py), with a
# fixed seed so a CI failure replays; BERTH_FUZZ_RUNS changes the count. A
# finding leaves its input in the work dir, which is then kept and named.
#
#   run.sh FUZZER
set -euo pipefail
fuzzer=${1:?usage: $0 FUZZER}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d /tmp/berth-fuzz.XXXXXX)
python3 "$here/seeds.py" "$work/corpus"
cp -r "$work/corpus" "$work/seeds"
if (cd "$work" && "$fuzzer" -runs="${BERTH_FUZZ_RUNS:-60000}" -seed=1 -max_len=131072 -print_final_stats=1 \
      corpus seeds >"$work/fuzz.log" 2>&1); then
  tail -n 12 "$work/fuzz.log"
  rm -rf "$work"
else
  tail -n 40 "$work/fuzz.log"
  echo "fuzz: finding kept in $work (crash-* is the input)"
  exit 1
fi
