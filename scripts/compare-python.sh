#!/usr/bin/env bash
# Side by side with Python tdhook 0.3.0: the same random GPT-2 weights and the same workloads,
# Python (torch, CPU) and this library alternating, at 2 threads and at 1; scikit-learn probes
# against our batched probe training; peak RSS of a caching run. See BENCHMARKS.md.
#
#   scripts/compare-python.sh                 # everything (~10–15 min on 2 cores)
#   scripts/compare-python.sh --quick         # fewer rounds, 2 threads only, no probes (~2 min)
#   scripts/compare-python.sh -- --rounds 7   # extra arguments for scripts/bench_python.py
#
# Python: $BENCH_PYTHON if set (any interpreter with tests/oracle/requirements.txt installed),
# else .venv-bench/ (created from tests/oracle/requirements.txt on first use: PyPI, ~3 GB).
# Output: the report on stdout, also out/compare/report.md and out/compare/results.json.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) quick=1 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done

py=${BENCH_PYTHON:-}
if [[ -z $py ]]; then
  if [[ ! -x .venv-bench/bin/python ]]; then
    echo "== creating .venv-bench (tests/oracle/requirements.txt)" >&2
    python3 -m venv .venv-bench
    .venv-bench/bin/pip install -q --upgrade pip
    .venv-bench/bin/pip install -q -r tests/oracle/requirements.txt
  fi
  py=.venv-bench/bin/python
fi

echo "== build (bench profile)" >&2
bin=$(cargo bench -p tdhook-suite --no-run --bench compare --message-format=json 2>/dev/null |
  "$py" -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "compare" and m.get("executable"):
        print(m["executable"])')
[[ -x $bin ]] || { echo "could not build the compare bench (run: cargo bench -p tdhook-suite --no-run --bench compare)" >&2; exit 1; }

mkdir -p out/compare
args=(--rust-bin "$bin" --out out/compare/results.json)
if [[ $quick == 1 ]]; then
  args+=(--threads 2 --rounds 3 --iters-tiny 30 --no-probes)
fi

{
  echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores online, $(free -g | awk '/^Mem:/{print $2}') GiB RAM"
  echo "rustc:   $(rustc --version)"
  echo "python:  $("$py" --version 2>&1)"
  echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
  echo "load before: $(uptime | sed 's/.*load average: //') (1, 5, 15 min)"
  echo "command: $py scripts/bench_python.py ${args[*]} ${extra[*]}"
  echo
} | tee out/compare/report.md

"$py" scripts/bench_python.py "${args[@]}" "${extra[@]}" 2> >(tee out/compare/progress.log >&2) | tee -a out/compare/report.md

echo | tee -a out/compare/report.md
echo "load after: $(uptime | sed 's/.*load average: //') (1, 5, 15 min)" | tee -a out/compare/report.md
