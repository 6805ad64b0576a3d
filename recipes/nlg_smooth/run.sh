#!/usr/bin/env bash
# nlg-smooth on IWSLT14 De->En: prep -> ALS-SK and every comparison system (issue 14) -> eval -> export -> table.
#
# Usage (from the repository root):
#   recipes/nlg_smooth/run.sh [--stage N] [--stop-stage M] [--raw DIR] [--data DIR] [--runs DIR]
#                             [--config YAML] [--device cuda|cpu] [--ngpu N] [--seeds "0 1 2"]
#                             [--methods "als_sk ce ls ls_unigram confpen tfkd pskd"] [--beam-size N] [--lenpen X]
#                             [--train-args "..."] [--overwrite]
#   Each flag has an environment-variable twin (RAW, DATA, RUNS, CONFIG, DEVICE, NGPU, SEEDS, METHODS,
#   BEAM_SIZE, LENPEN, TRAIN_ARGS, OVERWRITE=1); a flag wins over the variable.
#
# RAW is the output of fairseq's examples/translation/prepare-iwslt14.sh (iwslt14.tokenized.de-en/:
# train.de/.en, valid.*, test.*; TED talks are CC BY-NC-ND, so skd does not download them).
#
# Stages (default 0..4):
#   0  skd nlg-smooth prep --source iwslt14 (BPE markers removed, joint sentencepiece 10k)  -> $DATA
#   1  train every method x seed                              -> $RUNS/<method>_seed<S>
#   2  eval on test: tokenized BLEU, sacreBLEU, chrF, ECE/MCE, NLL (beam, lenpen)  -> $RUNS/results/*.eval.json
#   3  export the first seed's ALS-SK model and translate one test sentence with it
#   4  print a table (mean ± std over seeds)
#
# Re-running is safe: finished runs are skipped, unfinished ones resumed; --overwrite starts over.
set -euo pipefail

RAW=${RAW:-data/iwslt14.tokenized.de-en}
DATA=${DATA:-data/iwslt14}
RUNS=${RUNS:-runs/nlg_smooth_iwslt14}
CONFIG=${CONFIG:-recipes/nlg_smooth/iwslt14.yaml}
# every loss.method: ALS-SK, CE, uniform LS, LS with a unigram prior, confidence penalty, TF-KD_reg, PS-KD
METHODS=${METHODS:-als_sk ce ls ls_unigram confpen tfkd pskd}
BEAM_SIZE=${BEAM_SIZE:-5}
LENPEN=${LENPEN:-1.0}
STOP_STAGE=${STOP_STAGE:-4}
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"  # options, run_stage, log, die, skd_train, to_file, results_table
RESULTS=$RUNS/results

if run_stage 0; then
  [[ -d $RAW ]] || die "stage 0: $RAW not found (run fairseq's prepare-iwslt14.sh first)"
  log "stage 0: prep $RAW -> $DATA"
  flags=()
  [[ $OVERWRITE == 1 ]] && flags+=(--overwrite)
  if [[ -f $DATA/prep.json && $OVERWRITE != 1 ]]; then
    log "stage 0: $DATA already prepared, skipping"
  else
    "$SKD" nlg-smooth prep --source iwslt14 --raw "$RAW" --out "$DATA" --vocab-size 10000 ${flags[@]+"${flags[@]}"}
  fi
fi

if run_stage 1; then
  for seed in $SEEDS; do
    for method in $METHODS; do
      skd_train nlg-smooth "$RUNS/${method}_seed$seed" "$DATA" "$seed" --set "loss.method=$method"
    done
  done
fi

evaluate() {  # evaluate RUN_DIR
  log "stage 2: eval $1 (beam $BEAM_SIZE, lenpen $LENPEN)"
  to_file "$RESULTS/$(basename "$1").eval.json" "$SKD" nlg-smooth eval --run-dir "$1" --split test \
    --beam-size "$BEAM_SIZE" --lenpen "$LENPEN" --device "$DEVICE" --json
}
if run_stage 2; then each_finished_run "$METHODS" evaluate; fi

if run_stage 3; then
  first_seed=${SEEDS%% *}
  rd=$RUNS/als_sk_seed$first_seed
  if [[ -f $rd/train_summary.json ]]; then
    log "stage 3: export $rd"
    "$SKD" nlg-smooth export --run-dir "$rd" --overwrite --json > /dev/null
    head -n 1 "$DATA/test.src" | "$SKD" nlg-smooth translate --model "$rd/export"
  fi
fi

if run_stage 4; then
  [[ -d $RESULTS ]] || die "stage 4: no results in $RESULTS (run stage 2 first)"
  results_table "$RESULTS" --glob '*.eval.json' --metric 'BLEU tok.=bleu' --metric sacreBLEU=bleu_sacre \
    --metric chrF=chrf --metric NLL=nll --metric 'ECE %=ece:100' --metric 'MCE %=mce:100' \
    --caption "mean ± sample std over seeds; BLEU tok. = tokenized, case-insensitive (fairseq/IWSLT convention); \
sacreBLEU = detokenized 13a."
fi
