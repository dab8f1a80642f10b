#!/usr/bin/env bash
# "Zero overhead when no hook is active": plain candle GPT-2 vs the tdhook DSL with hooks off.
#
#   scripts/bench-hooks-off.sh                  # interleaved (1 thread and default pool) + criterion
#   scripts/bench-hooks-off.sh --interleaved    # interleaved only (~3.5 min on 2 cores)
#   scripts/bench-hooks-off.sh --criterion      # criterion only (~1.5–2 min)
#   scripts/bench-hooks-off.sh --count          # instruction counts under callgrind (tiny, ~5–10 min)
#
# Env: CRITERION_THREADS (RAYON_NUM_THREADS for the criterion run; default 1, "default" for the
# default pool); NICE (e.g. NICE=-10: run the timed binaries at that niceness, so that on a shared
# machine other work yields the CPU; needs root for negative values); COUNT_FORWARDS,
# COUNT_REPEATS (--count). Extra arguments after `--` go to the interleaved bench
# (e.g. -- --budget-small 30).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target=${CARGO_TARGET_DIR:-$root/target}

run_interleaved=1
run_criterion=1
run_count=0
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --interleaved) run_criterion=0 ;;
    --criterion) run_interleaved=0 ;;
    --count) run_interleaved=0; run_criterion=0; run_count=1 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

nice=""
[[ -n ${NICE:-} ]] && nice="nice -n $NICE"

echo "== machine"
echo "cpu:    $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) cores online)"
echo "rustc:  $(rustc --version)"
echo "load:   $(uptime | sed 's/.*load average: //') (1, 5, 15 min)${NICE:+; timed runs at nice $NICE}"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
echo

echo "== build (bench profile)"
cargo bench -p tdhook-suite --no-run --bench hooks_off --bench hooks_off_interleaved 2>&1 | grep -E '^(error|warning: unused)|Finished' || true
echo

if [[ $run_count == 1 ]]; then
  # Instructions the main thread executes inside `PlainGpt2::forward` / `Gpt2::forward`, counted
  # by callgrind (no timing noise). Each run builds the tiny models, runs one forward of each arm
  # (the logits check) and then N forwards of one arm: I_plain = (N+1)P + D, I_dsl = P + (N+1)D,
  # so (I_plain - I_dsl) / N = P - D. glibc malloc's internal work varies from run to run (the
  # rayon worker allocates too), so the pair is repeated and malloc.c is also reported apart.
  command -v valgrind >/dev/null || { echo "valgrind not found" >&2; exit 1; }
  n=${COUNT_FORWARDS:-50}
  reps=${COUNT_REPEATS:-3}
  bin=$(cargo bench -p tdhook-suite --no-run --bench hooks_off_interleaved 2>&1 | sed -n 's/.*Executable .*(\(.*\))/\1/p' | tail -1)
  tmp=$(mktemp -d)
  for rep in $(seq 1 "$reps"); do
    for arm in plain dsl empty cache; do
      RAYON_NUM_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.$arm.$rep" \
        --collect-atstart=no \
        --toggle-collect='hooks_off_interleaved::support::plain_gpt2::PlainGpt2::forward' \
        --toggle-collect='tdhook::models::gpt2::Gpt2::forward' \
        "$bin" --only $arm "$n" --shape tiny >"$tmp/log.$arm.$rep" 2>&1
      callgrind_annotate --inclusive=no --threshold=100 "$tmp/cg.$arm.$rep" >"$tmp/ann.$arm.$rep" 2>/dev/null
    done
    echo "callgrind pair $rep/$reps done"
  done
  echo "== callgrind instruction counts (tiny, RAYON_NUM_THREADS=1, $n forwards per arm + 1 plain + 1 dsl, $reps repeats)"
  python3 - "$tmp" "$n" "$reps" <<'PY'
import os, re, sys
tmp, n, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
# The forwards' own code (self cost, not what it calls): the model functions of both arms, plus
# `&Tensor + Tensor`, which is inlined into one arm and not the other.
MODEL = re.compile(r"tdhook::models::gpt2::|plain_gpt2::|Tensor as core::ops::arith::Add")
def counts(path):
    """(total, outside malloc.c, model code) instructions of one callgrind run."""
    total = malloc = model = 0
    for line in open(path):
        m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(.*)", line)
        if not m:
            continue
        ir, name = int(m.group(1).replace(",", "")), m.group(2)
        if name.startswith("PROGRAM TOTALS"):
            total = ir
        elif "/malloc/" in name:
            malloc += ir
        elif MODEL.search(name):
            model += ir
    return total, total - malloc, model
def solve(a, b):
    """Per-forward (P, D) from I_plain = (n+1)P + D and I_dsl = P + (n+1)D."""
    s, diff = (a + b) / (n + 2), (a - b) / n
    return (s + diff) / 2, (s - diff) / 2
mean = lambda xs: sum(xs) / len(xs)
names = {"plain": "plain", "dsl": "dsl_hooks_off", "empty": "dsl_empty_hookset", "cache": "dsl_cache_all_blocks"}
# per repeat, per arm: (total, outside malloc, model code) per forward
per = []
for r in range(1, reps + 1):
    ca, cb = counts(f"{tmp}/ann.plain.{r}"), counts(f"{tmp}/ann.dsl.{r}")
    arms = {"plain": [], "dsl": []}
    for k in range(3):
        p, d = solve(ca[k], cb[k])
        arms["plain"].append(p)
        arms["dsl"].append(d)
    for arm in ["empty", "cache"]:
        path = f"{tmp}/ann.{arm}.{r}"
        if os.path.exists(path):
            cx = counts(path)
            arms[arm] = [(cx[k] - arms["plain"][k] - arms["dsl"][k]) / n for k in range(3)]
    per.append(arms)
print("| repeat | instr./forward plain | dsl_hooks_off | dsl − plain | outside malloc.c | forwards' own code | ratio dsl/plain |")
print("|---|---|---|---|---|---|---|")
for i, arms in enumerate(per, 1):
    p, d = arms["plain"], arms["dsl"]
    print(f"| {i} | {p[0]:,.0f} | {d[0]:,.0f} | {d[0] - p[0]:+,.0f} | {d[1] - p[1]:+,.0f} | {d[2] - p[2]:+,.0f} | {d[0] / p[0]:.5f} |")
print()
print("| arm | instr./forward (mean) | − plain: total, mean [min, max] | − plain: outside malloc.c, mean [min, max] | ratio to plain |")
print("|---|---|---|---|---|")
for arm in ["plain", "dsl", "empty", "cache"]:
    if not all(arm in a for a in per):
        continue
    tot = [a[arm][0] for a in per]
    dt = [a[arm][0] - a["plain"][0] for a in per]
    dn = [a[arm][1] - a["plain"][1] for a in per]
    if arm == "plain":
        print(f"| {names[arm]} | {mean(tot):,.0f} | | | 1.00000 |")
    else:
        print(f"| {names[arm]} | {mean(tot):,.0f} | {mean(dt):+,.0f} [{min(dt):+,.0f}, {max(dt):+,.0f}] "
              f"| {mean(dn):+,.0f} [{min(dn):+,.0f}, {max(dn):+,.0f}] | {mean(tot) / mean([a['plain'][0] for a in per]):.5f} |")
PY
  echo "(callgrind outputs: $tmp; e.g. callgrind_annotate --inclusive=no $tmp/cg.dsl.1)"
  exit 0
fi

rows=()
cpurows=()
if [[ $run_interleaved == 1 ]]; then
  for threads in 1 default; do
    if [[ $threads == 1 ]]; then
      echo "== interleaved, RAYON_NUM_THREADS=1"
      out=$(RAYON_NUM_THREADS=1 $nice cargo bench -p tdhook-suite -q --bench hooks_off_interleaved -- "${extra[@]}")
    else
      echo "== interleaved, default thread pool (RAYON_NUM_THREADS unset: $(nproc) cores)"
      out=$(env -u RAYON_NUM_THREADS $nice cargo bench -p tdhook-suite -q --bench hooks_off_interleaved -- "${extra[@]}")
    fi
    echo "load after: $(uptime | sed 's/.*load average: //')"
    while IFS= read -r line; do
      [[ $line == "| "[a-z]* && $line != "| shape"* ]] || continue
      bars=${line//[^|]/}
      if [[ ${#bars} -ge 10 ]]; then rows+=("$line"); else cpurows+=("$line"); fi
    done <<<"$out"
  done
  echo
fi

if [[ $run_criterion == 1 ]]; then
  ct=${CRITERION_THREADS:-1}
  echo "== criterion (sequential A then B), RAYON_NUM_THREADS=$ct"
  if [[ $ct == default ]]; then
    env -u RAYON_NUM_THREADS $nice cargo bench -p tdhook-suite -q --bench hooks_off -- --noplot 2>&1 | grep -E "^\[|time:|^[a-z0-9_]+/[a-z_]+" || true
  else
    RAYON_NUM_THREADS=$ct $nice cargo bench -p tdhook-suite -q --bench hooks_off -- --noplot 2>&1 | grep -E "^\[|time:|^[a-z0-9_]+/[a-z_]+" || true
  fi
  echo "load after: $(uptime | sed 's/.*load average: //')"
  echo
fi

if [[ ${#rows[@]} -gt 0 ]]; then
  echo "== interleaved: per-forward medians, ratio dsl_hooks_off / plain"
  echo "| shape | threads | rounds × K | plain (median) | dsl_hooks_off (median) | ratio of medians [95% CI] | ratio of p10 [95% CI] | per-round ratio median [95% CI] | per-round min – max |"
  echo "|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "== interleaved: process CPU time per forward (not counting time other processes held the core)"
  echo "| shape | threads | process CPU / forward, plain (median) | dsl_hooks_off (median) | CPU ratio of medians [95% CI] | CPU per-round ratio median [95% CI] |"
  echo "|---|---|---|---|---|---|"
  printf '%s\n' "${cpurows[@]}"
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
