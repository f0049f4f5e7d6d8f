#!/usr/bin/env bash
# SAM-NPO's settings searched on the demo benchmark (issue 14: a relearning-resistant method), beside NPO and PDU at the
# demo's settings, from the demo's cached target and oracle (pipeline.finetune caches them: `obliviate demo` or the
# first bench makes them once). One job at a time, one thread: about 2-4 minutes per run on a shared 2-core machine.
#   bash benchmarks/sam_grid.sh              # the grid: runs/sam-grid/results.md (forget quality, utility, privleak),
#                                            #   and wider radii at the demo's lr: runs/sam-grid-wide/results.md
#   bash benchmarks/sam_grid.sh screen [RUN...]  # those runs (default: every run of both) through the certificate's
#                                            #   relearning and MIA checks: runs/sam-grid/screen/<run>/certificate.json
#   bash benchmarks/sam_grid.sh certify RUN  # the whole certificate of one run (RUN=runs/sam-grid/runs/<folder>):
#                                            #   runs/sam-grid/certify/<folder>/certificate.json
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
out=runs/sam-grid
data=runs/data/fictional-authors
certify() {  # certify RUN OUT [--certify-config FILE]: against the bench's target and oracle (from the cache)
  local models
  models=$(python3 -c "
from obliviate.data import load_benchmark
from obliviate.pipeline import finetune
print(finetune(load_benchmark('$data', 'forget10'), 'tiny', progress=False, log=lambda *a: None)['target'].parent)")
  obliviate audit --threads 1 --quiet --data "$data" --forget-split forget10 --model "$1/model" \
    --oracle "$models/oracle" --target "$models/target" --certify --out "$2" "${@:3}" > "$2.log" 2>&1 || true
  echo "$1 -> $2/certificate.json"
}
case "${1:-grid}" in
  certify) mkdir -p "$out/certify"; certify "${2%/}" "$out/certify/$(basename "$2")"; exit ;;
  screen)
    mkdir -p "$out/screen"
    cfg=$(mktemp --suffix .yaml)
    echo "checks: [forget_quality, utility, mia_privleak, mia_tpr, relearn_forget]" > "$cfg"
    runs=("${@:2}")
    [ ${#runs[@]} -gt 0 ] || runs=("$out"/runs/*/ "$out"-wide/runs/*/)
    for run in "${runs[@]}"; do
      run=${run%/}
      [ -f "$out/screen/$(basename "$run")/certificate.json" ] || \
        certify "$run" "$out/screen/$(basename "$run")" --certify-config "$cfg"
    done
    exit ;;
esac
# NPO (alpha 5) and PDU as the demo runs them; SAM-NPO with NPO's demo preset, rho x learning rate
obliviate bench --threads 1 --quiet --out "$out" --methods NPO,PDU,SAM-NPO \
  --hp NPO:alpha=5 --hp SAM-NPO:alpha=5 \
  --grid SAM-NPO:rho=0.01,0.05,0.1 --grid SAM-NPO:train.lr=5e-4,1e-3
# the trend at the demo's lr (5e-4: privleak falls as rho grows) followed further
obliviate bench --threads 1 --quiet --out "$out"-wide --methods SAM-NPO --hp SAM-NPO:alpha=5 --grid SAM-NPO:rho=0.2,0.5
