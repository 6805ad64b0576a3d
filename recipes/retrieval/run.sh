#!/usr/bin/env bash
# retrieval on MSCOCO / Flickr30k (Karpathy split): prep -> SKD / contrastive-only training -> eval
# -> export -> index -> demo search -> comparison table.
#
# Usage (from the repository root):
#   recipes/retrieval/run.sh [--stage N] [--stop-stage M] [--raw DIR] [--encoder DIR] [--data DIR]
#                            [--runs DIR] [--config YAML] [--device cuda|cpu] [--seeds "0 1 2"] [--overwrite]
#   Environment twins: RAW, ENCODER, DATA, RUNS, CONFIG, DEVICE, SEEDS, OVERWRITE=1 (a flag wins).
#
# Stages (default 0..5):
#   0  prep: Karpathy JSON + images through the local encoder (data_scripts/retrieval.sh fetches them)
#   1  train SKD (the paper)                   -> $RUNS/skd_seed<S>
#   2  train the contrastive-only baseline      -> $RUNS/contrastive_seed<S>   (--baseline: "without SKD")
#   3  eval every run on the test split          -> $RUNS/results/<run>.eval.json (+ TREC runs in <run>/eval/)
#   4  export + Seismic index of the test images + one demo query
#   5  table: t2i R@1/5/10, MRR@10 for dense / sparse / integrated (mean ± std over seeds)
#
# Examples:
#   RAW=/data/coco ENCODER=/models/blip-itm-base-coco recipes/retrieval/run.sh
#   recipes/retrieval/run.sh --config recipes/retrieval/flickr.yaml --raw /data/flickr30k --data data/flickr --runs runs/flickr
# Re-running is safe: finished runs are skipped, unfinished ones resumed.
set -euo pipefail

RAW=${RAW:-data/coco_raw}
ENCODER=${ENCODER:-models/blip-itm-base-coco}
DATA=${DATA:-data/coco}
RUNS=${RUNS:-runs/retrieval_coco}
CONFIG=${CONFIG:-recipes/retrieval/coco.yaml}
DEVICE=${DEVICE:-cuda}
SEEDS=${SEEDS:-42}
OVERWRITE=${OVERWRITE:-0}
SKD=${SKD:-skd}
stage=0
stop_stage=5

die() { echo "run.sh: error: $*" >&2; exit 1; }
log() { echo "run.sh: $*" >&2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --raw) RAW=$2; shift 2 ;;
    --encoder) ENCODER=$2; shift 2 ;;
    --data) DATA=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --seeds) SEEDS=$2; shift 2 ;;
    --overwrite) OVERWRITE=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
run_stage() { [[ $stage -le $1 && $stop_stage -ge $1 ]]; }
RESULTS=$RUNS/results
ow=(); [[ $OVERWRITE == 1 ]] && ow=(--overwrite)

train() {  # train NAME SEED [extra args]
  local name=$1 seed=$2; shift 2
  local rd=$RUNS/${name}_seed$seed
  if [[ -f $rd/train_summary.json && $OVERWRITE != 1 ]]; then log "$rd finished, skipping"; return; fi
  if [[ -f $rd/config.yaml && $OVERWRITE != 1 ]]; then
    "$SKD" retrieval train --run-dir "$rd" --data "$DATA" --resume --device "$DEVICE"; return
  fi
  "$SKD" retrieval train --config "$CONFIG" --data "$DATA" --run-dir "$rd" --seed "$seed" --device "$DEVICE" "$@" ${ow[@]+"${ow[@]}"}
}

if run_stage 0; then
  if [[ -f $DATA/prep.json && $OVERWRITE != 1 ]]; then log "stage 0: $DATA is prepared, skipping"
  else "$SKD" retrieval prep --source karpathy --raw "$RAW" --encoder "$ENCODER" --out "$DATA" ${ow[@]+"${ow[@]}"}; fi
fi
for seed in $SEEDS; do
  if run_stage 1; then log "stage 1: SKD seed $seed"; train skd "$seed"; fi
  if run_stage 2; then log "stage 2: contrastive-only seed $seed"; train contrastive "$seed" --baseline; fi
done
if run_stage 3; then
  mkdir -p "$RESULTS"
  for rd in "$RUNS"/*_seed*; do
    [[ -f $rd/train_summary.json ]] || continue
    "$SKD" retrieval eval --run-dir "$rd" --device "$DEVICE" --json > "$RESULTS/$(basename "$rd").eval.json.tmp"
    mv "$RESULTS/$(basename "$rd").eval.json.tmp" "$RESULTS/$(basename "$rd").eval.json"
  done
fi
if run_stage 4; then
  for rd in "$RUNS"/*_seed*; do
    [[ -f $rd/train_summary.json ]] || continue
    "$SKD" retrieval export --run-dir "$rd" --overwrite
    "$SKD" retrieval index --run-dir "$rd" --overwrite
  done
  first=${SEEDS%% *}
  "$SKD" retrieval search --run-dir "$RUNS/skd_seed$first" --query "a woman cutting a cake" --validate
fi
if run_stage 5; then
  python - "$RESULTS" <<'PY'
import json, statistics, sys
from collections import defaultdict
from pathlib import Path
groups = defaultdict(list)
for p in sorted(Path(sys.argv[1]).glob("*.eval.json")):
    groups[p.name.split("_seed")[0]].append(json.loads(p.read_text()))
if not groups:
    sys.exit(f"no results in {sys.argv[1]}")
print(f"{'system':12s} {'score':10s} " + " ".join(f"{m:>13s}" for m in ("R@1", "R@5", "R@10", "MRR@10")))
for system, runs in sorted(groups.items()):
    for score in ("dense", "sparse", "integrated"):
        cells = []
        for m in ("R@1", "R@5", "R@10", "MRR@10"):
            v = [100 * r["t2i"][score][m] for r in runs]
            cells.append(f"{statistics.mean(v):6.2f}±{statistics.stdev(v) if len(v) > 1 else 0:5.2f}")
        print(f"{system:12s} {score:10s} " + " ".join(f"{c:>13s}" for c in cells))
print(f"(n = {', '.join(f'{k}: {len(v)}' for k, v in groups.items())} seeds; text->image on the Karpathy test split)")
PY
fi
