#!/usr/bin/env bash
# nlp-embed on PTB or WikiText-2: prep -> SKD / plain CE / uniform LS / the noise and random controls, over
# seeds -> eval (perplexity, NLL, ECE/MCE) -> export -> comparison table (mean ± std over seeds).
#
# Usage (from the repository root):
#   recipes/nlp_embed/run.sh [--stage N] [--stop-stage M] [--source ptb|wikitext2|synthetic]
#                            [--raw DIR] [--data DIR] [--config YAML] [--runs DIR] [--device cuda|cpu]
#                            [--ngpu N] [--seeds "0 1 2"] [--train-args "..."] [--overwrite]
#   Each flag has an environment-variable twin (SOURCE, RAW, DATA, CONFIG, RUNS, DEVICE, NGPU, SEEDS,
#   TRAIN_ARGS, OVERWRITE=1); a flag wins over the variable.
#
# Stages (default 0..4):
#   0  skd nlp-embed prep --source $SOURCE --raw $RAW --out $DATA   (you supply the corpus files:
#      ptb.{train,valid,test}.txt or wiki.{train,valid,test}.tokens; nothing is downloaded)
#   1  train each system and seed -> $RUNS/<system>_seed<S>; systems: skd, ce (--baseline),
#      ls (--set kd.method=ls), noise (--set kd.method=noise), random (--set kd.method=random)
#   2  eval every finished run on test -> $RUNS/results/<run>.test.eval.json (+ plots/reliability.png)
#   3  export the SKD runs and sample from the first one
#   4  print the comparison table
#
# Examples:
#   recipes/nlp_embed/run.sh --source ptb --raw /data/ptb                       # PTB, 1 GPU, seed 0
#   SEEDS="0 1 2" recipes/nlp_embed/run.sh --source wikitext2 --raw /data/wikitext-2 \
#       --config recipes/nlp_embed/wikitext2.yaml --data data/wt2 --runs runs/wt2
#   recipes/nlp_embed/run.sh --source synthetic --config recipes/nlp_embed/tiny.yaml --device cpu \
#       --seeds "0 1 2" --runs runs/nlp_embed_tiny                              # the tiny table of README §9
#
# Re-running is safe: a finished run is skipped, an unfinished one is continued with --resume, and
# --overwrite starts runs (and the prep) over.
set -euo pipefail

SOURCE=${SOURCE:-ptb}
RAW=${RAW:-data/ptb_raw}
DATA=${DATA:-}
CONFIG=${CONFIG:-recipes/nlp_embed/ptb.yaml}
RUNS=${RUNS:-}
SYSTEMS=${SYSTEMS:-"skd ce ls noise random"}
STOP_STAGE=${STOP_STAGE:-4}
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"  # options, run_stage, log, die, skd_train, to_file, results_table
DATA=${DATA:-data/nlp_embed_$SOURCE}
RUNS=${RUNS:-runs/nlp_embed_$SOURCE}
RESULTS=$RUNS/results

system_args() {  # the train flags that make each system
  case "$1" in
    skd)   ;;
    ce)    echo "--baseline" ;;
    ls)    echo "--set kd.method=ls" ;;
    noise) echo "--set kd.method=noise" ;;
    random) echo "--set kd.method=random" ;;
    *)     die "unknown system '$1'" ;;
  esac
}

train() {  # train SYSTEM SEED
  local sys_args
  read -r -a sys_args <<< "$(system_args "$1")"
  skd_train nlp-embed "$RUNS/$1_seed$2" "$DATA" "$2" ${sys_args[@]+"${sys_args[@]}"}
}

if run_stage 0; then
  log "stage 0: prep $SOURCE ($RAW) -> $DATA"
  prep=(nlp-embed prep --source "$SOURCE" --out "$DATA")
  [[ $SOURCE != synthetic ]] && prep+=(--raw "$RAW")
  if [[ -f $DATA/prep.json && $OVERWRITE != 1 ]]; then
    log "stage 0: $DATA already prepared, skipping"
  else
    [[ $OVERWRITE == 1 ]] && prep+=(--overwrite)
    "$SKD" "${prep[@]}"
  fi
fi

for seed in $SEEDS; do
  for system in $SYSTEMS; do
    if run_stage 1; then log "stage 1: $system, seed $seed"; train "$system" "$seed"; fi
  done
done

evaluate() {  # evaluate RUN_DIR
  log "stage 2: eval $1 on test"
  to_file "$RESULTS/$(basename "$1").test.eval.json" "$SKD" nlp-embed eval --run-dir "$1" --split test --device "$DEVICE" --json
}
if run_stage 2; then each_finished_run "$SYSTEMS" evaluate; fi

if run_stage 3; then
  first_seed=${SEEDS%% *}
  export_run() { log "stage 3: export $1"; "$SKD" nlp-embed export --run-dir "$1" --overwrite --json > /dev/null; }
  each_finished_run skd export_run
  if [[ -d $RUNS/skd_seed$first_seed/export ]]; then
    "$SKD" nlp-embed sample --model "$RUNS/skd_seed$first_seed/export" --prompt "the" --top-k 40 --num-samples 3
  fi
fi

if run_stage 4; then
  [[ -d $RESULTS ]] || die "stage 4: no results in $RESULTS (run stage 2 first)"
  results_table "$RESULTS" --glob '*.test.eval.json' --sort system=skd,ce,ls,noise --metric 'test ppl=ppl' \
    --metric NLL=nll --metric 'ECE %=ece:100' --metric 'MCE %=mce:100' --metric 'acc %=accuracy:100' \
    --caption "test split, mean ± sample std over seeds"
fi
