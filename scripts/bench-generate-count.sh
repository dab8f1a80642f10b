#!/usr/bin/env bash
# Instruction counts of generation per arm (plain, no_hook, steered, per_request), no timing
# noise: each arm runs N and 2N untimed generations of the tiny model under callgrind with one
# thread, and (I(2N) − I(N)) / N is its count per generation (setup cancels out).
#
#   scripts/bench-generate-count.sh [N]      # default N = 8; ~3 min
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-8}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
bin=$(cargo bench --no-run --bench generate --message-format=json 2>/dev/null |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "generate" and m.get("executable"):
        print(m["executable"])')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
count() { # arm, generations -> total instructions
  RAYON_NUM_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$tmp/cg" \
    "$bin" --bench --shape tiny --only "$1" "$2" >/dev/null 2>&1
  sed -n 's/^summary: *//p' "$tmp/cg" | awk '{print $1}'
}
echo "| arm | instructions per generation (tiny, batch 4, 16 + 32 tokens) | − plain | ratio to plain |"
echo "|---|---|---|---|"
plain=""
for arm in plain no_hook steered per_request; do
  a=$(count "$arm" "$n")
  b=$(count "$arm" $((2 * n)))
  per=$(( (b - a) / n ))
  [[ -z $plain ]] && plain=$per
  python3 -c "print(f'| $arm | {$per:,} | {$per - $plain:+,} | {$per / $plain:.5f} |')"
done
