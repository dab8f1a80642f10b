#!/usr/bin/env bash
# "Zero overhead when no hook is active": plain candle GPT-2 vs the tdhook DSL with hooks off.
#
#   scripts/bench-hooks-off.sh                  # interleaved (1 thread and default pool) + criterion
#   scripts/bench-hooks-off.sh --interleaved    # interleaved only (~3.5 min on 2 cores)
#   scripts/bench-hooks-off.sh --criterion      # criterion only (~1.5–2 min)
#
# Env: CRITERION_THREADS (RAYON_NUM_THREADS for the criterion run; default 1, "default" for the
# default pool); extra arguments after `--` go to the interleaved bench (e.g. -- --budget-small 30).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target=${CARGO_TARGET_DIR:-$root/target}

run_interleaved=1
run_criterion=1
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --interleaved) run_criterion=0 ;;
    --criterion) run_interleaved=0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

echo "== machine"
echo "cpu:    $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) cores online)"
echo "rustc:  $(rustc --version)"
echo "load:   $(uptime | sed 's/.*load average: //') (1, 5, 15 min)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
echo

echo "== build (bench profile)"
cargo bench --no-run --bench hooks_off --bench hooks_off_interleaved 2>&1 | grep -E '^(error|warning: unused)|Finished' || true
echo

rows=()
if [[ $run_interleaved == 1 ]]; then
  for threads in 1 default; do
    if [[ $threads == 1 ]]; then
      echo "== interleaved, RAYON_NUM_THREADS=1"
      out=$(RAYON_NUM_THREADS=1 cargo bench -q --bench hooks_off_interleaved -- "${extra[@]}")
    else
      echo "== interleaved, default thread pool (RAYON_NUM_THREADS unset: $(nproc) cores)"
      out=$(env -u RAYON_NUM_THREADS cargo bench -q --bench hooks_off_interleaved -- "${extra[@]}")
    fi
    echo "load after: $(uptime | sed 's/.*load average: //')"
    while IFS= read -r line; do
      [[ $line == "| "[a-z]* && $line != "| shape"* ]] && rows+=("$line")
    done <<<"$out"
  done
  echo
fi

if [[ $run_criterion == 1 ]]; then
  ct=${CRITERION_THREADS:-1}
  echo "== criterion (sequential A then B), RAYON_NUM_THREADS=$ct"
  if [[ $ct == default ]]; then
    env -u RAYON_NUM_THREADS cargo bench -q --bench hooks_off -- --noplot 2>&1 | grep -E '^\[|time:|^[a-z_]+/[a-z_]+' || true
  else
    RAYON_NUM_THREADS=$ct cargo bench -q --bench hooks_off -- --noplot 2>&1 | grep -E '^\[|time:|^[a-z_]+/[a-z_]+' || true
  fi
  echo "load after: $(uptime | sed 's/.*load average: //')"
  echo
fi

if [[ ${#rows[@]} -gt 0 ]]; then
  echo "== interleaved: per-forward medians, ratio dsl_hooks_off / plain"
  echo "| shape | threads | rounds × K | plain (median) | dsl_hooks_off (median) | ratio dsl/plain | 95% bootstrap CI | per-round ratio median [min, max] |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
fi

if [[ $run_criterion == 1 ]]; then
  echo "== criterion: median per forward (95% CI), ratio to plain (threads: ${CRITERION_THREADS:-1})"
  python3 - "$target/criterion" <<'PY'
import json, os, sys
base = sys.argv[1]
def fmt(ns):
    return f"{ns/1e6:.3f} ms" if ns >= 1e6 else f"{ns/1e3:.1f} µs"
print("| shape | function | median | 95% CI of median | ratio to plain |")
print("|---|---|---|---|---|")
for group in ["tiny", "gpt2_small"]:
    med = {}
    for fn in ["plain", "dsl_hooks_off", "dsl_empty_hookset", "dsl_cache_all_blocks"]:
        p = os.path.join(base, group, fn, "new", "estimates.json")
        if not os.path.exists(p):
            continue
        m = json.load(open(p))["median"]
        med[fn] = m
    for fn, m in med.items():
        ci = m["confidence_interval"]
        ratio = m["point_estimate"] / med["plain"]["point_estimate"] if "plain" in med else float("nan")
        print(f"| {group} | {fn} | {fmt(m['point_estimate'])} | {fmt(ci['lower_bound'])} – {fmt(ci['upper_bound'])} | {ratio:.4f} |")
PY
fi
