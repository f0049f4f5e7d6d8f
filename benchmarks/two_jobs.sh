#!/usr/bin/env bash
# Two obliviate jobs started together on one machine: each job's wall time against one job alone, with each job
# taking its share of the CPUs (the default, obliviate/threads.py) and with every job taking all of them (--threads N,
# the old behaviour). Run with nothing else on the machine:  bash benchmarks/two_jobs.sh [EPOCHS]
set -euo pipefail
epochs=${1:-30}
threads=$(python3 -c "from obliviate.threads import available_cpus; print(available_cpus())")
work=$(mktemp -d)
cd "$work"
obliviate data synth --out d --authors 40 --facts 5 >/dev/null
job() {  # a fine-tune of the tiny target on its own cold cache; prints its wall seconds
  local out=$1; shift
  OBLIVIATE_CACHE="$work/cache-$out" /usr/bin/time -f "%e" obliviate finetune --data d --only target --epochs "$epochs" \
    --out "$out" --quiet "$@" 2>&1 | tail -1
}
pair() {  # two jobs started together; prints both wall times
  job "$1" "${@:3}" > "$1.t" & job "$2" "${@:3}" > "$2.t"; wait
  echo "$(cat "$1.t") $(cat "$2.t")"
}
alone=$(job alone)
shared=$(pair s1 s2)
fixed=$(pair f1 f2 --threads "$threads")
python3 - "$alone" "$shared" "$fixed" "$threads" <<'PY'
import sys
alone, shared, fixed, n = float(sys.argv[1]), sys.argv[2].split(), sys.argv[3].split(), sys.argv[4]
print(f"one job alone: {alone:.1f} s")
print(f"two together, each its share of the {n} CPUs: " + ", ".join(f"{float(t):.1f} s ({float(t) / alone:.2f}x)" for t in shared))
print(f"two together, each --threads {n}: " + ", ".join(f"{float(t):.1f} s ({float(t) / alone:.2f}x)" for t in fixed))
PY
rm -rf "$work"
