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
#   1  train SKD (the paper, our corrected objective: $CONFIG)   -> $RUNS/skd_seed<S>
#      and, when ${CONFIG%.yaml}-official.yaml exists, the official code's objective -> $RUNS/official_seed<S>
#   2  train the contrastive-only baseline      -> $RUNS/contrastive_seed<S>   (--baseline: "without SKD")
#   3  eval every run on the test split          -> $RUNS/results/<run>.eval.json (+ TREC runs, per_query.tsv in <run>/eval/)
#      SKD against the baseline (paired t-test, randomisation) -> $RUNS/results/skd_seed<S>.compare.json
#   4  export + Seismic index of the test images, every SKD test query through the index
#      (-> $RUNS/results/skd_seed<S>.index.json) + one demo query
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
SEEDS=${SEEDS:-42}
STOP_STAGE=${STOP_STAGE:-5}
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"  # options, run_stage, log, die, skd_train, to_file, results_table
RESULTS=$RUNS/results
ow=(); [[ $OVERWRITE == 1 ]] && ow=(--overwrite)

train() {  # train NAME SEED [extra args]
  local name=$1 seed=$2
  shift 2
  skd_train retrieval "$RUNS/${name}_seed$seed" "$DATA" "$seed" "$@"
}

if run_stage 0; then
  if [[ -f $DATA/prep.json && $OVERWRITE != 1 ]]; then log "stage 0: $DATA is prepared, skipping"
  else "$SKD" retrieval prep --source karpathy --raw "$RAW" --encoder "$ENCODER" --out "$DATA" ${ow[@]+"${ow[@]}"}; fi
fi
OFFICIAL_CONFIG=${CONFIG%.yaml}-official.yaml
for seed in $SEEDS; do
  if run_stage 1; then
    log "stage 1: SKD seed $seed"; train skd "$seed"
    if [[ -f $OFFICIAL_CONFIG ]]; then
      log "stage 1: SKD, official objective ($OFFICIAL_CONFIG), seed $seed"; CONFIG=$OFFICIAL_CONFIG train official "$seed"
    fi
  fi
  if run_stage 2; then log "stage 2: contrastive-only seed $seed"; train contrastive "$seed" --baseline; fi
done
evaluate() { to_file "$RESULTS/$(basename "$1").eval.json" "$SKD" retrieval eval --run-dir "$1" --device "$DEVICE" --json; }
export_and_index() { "$SKD" retrieval export --run-dir "$1" --overwrite && "$SKD" retrieval index --run-dir "$1" --overwrite; }
compare() {  # the paper's significance test: SKD against the contrastive-only run of the same seed
  local base=${1/skd_seed/contrastive_seed}
  [[ -f $base/eval/per_query.tsv ]] || return 0
  to_file "$RESULTS/$(basename "$1").compare.json" "$SKD" retrieval eval --run-dir "$1" --compare "$base" --device "$DEVICE" --json
}
through_index() { to_file "$RESULTS/$(basename "$1").index.json" "$SKD" retrieval eval --run-dir "$1" --index --json; }
if run_stage 3; then each_finished_run "contrastive official skd" evaluate; each_finished_run "skd" compare; fi
if run_stage 4; then
  each_finished_run "skd official contrastive" export_and_index
  each_finished_run "skd" through_index
  first=${SEEDS%% *}
  "$SKD" retrieval search --run-dir "$RUNS/skd_seed$first" --query "a woman cutting a cake" --validate
fi
if run_stage 5; then
  results_table "$RESULTS" --glob '*.eval.json' --expand score=dense,sparse,integrated \
    --metric 'R@1=t2i.{score}.R@1:100' --metric 'R@5=t2i.{score}.R@5:100' --metric 'R@10=t2i.{score}.R@10:100' \
    --metric 'MRR@10=t2i.{score}.MRR@10:100' \
    --caption "text->image on the Karpathy test split, %, mean ± sample std over the n seeds"
fi
