#!/usr/bin/env bash
# MeDiVLAD's patient-disjoint 2-fold protocol: DINO continued from ImageNet DINO ViT-S/8 on the LUS frames, then
# frame-level KNN + linear probe (+ fine-tuning) and video-level dual-VLAD against NetVLAD and mean pooling, each
# also on the ImageNet DINO backbone without LUS pretraining; accuracy / weighted F1 / AUC per fold and their mean.
#
# Usage (from the repository root):
#   recipes/lus/run.sh [--stage N] [--stop-stage M] [--data DIR] [--init CKPT] [--runs DIR] [--device cuda|cpu]
#                      [--seeds "0"] [--train-args "..."] [--overwrite]
#   Environment twins: DATA, INIT, RUNS, DEVICE, SEEDS, TRAIN_ARGS, OVERWRITE=1
#   (recipes/common.sh parses them; a flag wins over the variable).
#
# Stages (default 0..5):
#   0  data: data_scripts/lus.sh (the COVID-19 POCUS CC BY clips; the paper's own data with --medivlad-raw there)
#   1  pretrain: DINO from --init (the ImageNet DINO checkpoint dino_deitsmall8_pretrain_full_checkpoint.pth,
#      a local file) on every frame, recipes/lus/dino.yaml -> $RUNS/dino_seed<S>
#   2  train, both folds, each seed -> $RUNS/<system>_f<F>_seed<S>:
#        frame          linear probe on the LUS-DINO teacher (+ the KNN sweep, in eval)   recipes/lus/frame.yaml
#        frame_ft       the same, fine-tuning the backbone (--finetune-backbone)
#        frame_imnet    linear probe on ImageNet DINO without LUS pretraining (--backbone $INIT)
#        dual_vlad      MeDiVLAD on the LUS-DINO teacher                                  recipes/lus/video.yaml
#        netvlad, mean  the paper's aggregation baselines on the same features
#        dual_vlad_imnet  dual-VLAD on ImageNet DINO without LUS pretraining
#   3  eval -> $RUNS/results/<run>.json
#   4  table: mean over folds (and seeds) of accuracy / weighted F1 / AUC, KNN at k chosen on the training fold and
#      the official max over k; the paper's headline numbers beside them
#   5  export the fold-1 dual-VLAD run and score one clip with it (severity, frame weights, attention PNGs)
#
# Re-running is safe: finished runs are skipped, unfinished ones resumed.
set -euo pipefail

DATA=${DATA:-data/lus/prepared/pocus_ccby}
INIT=${INIT:-}
RUNS=${RUNS:-runs/lus}
SEEDS=${SEEDS:-0}
STOP_STAGE=${STOP_STAGE:-5}
CONFIG=recipes/lus/frame.yaml  # skd_train's --config; set per system below
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"  # options, run_stage, log, die, skd_train, to_file, results_table

RESULTS=$RUNS/results
declare -A SYSTEM_ARGS=(
  [frame]="--level frame"
  [frame_ft]="--level frame --finetune-backbone"
  [frame_imnet]="--level frame"
  [dual_vlad]="--level video --aggregator dual_vlad"
  [netvlad]="--level video --aggregator netvlad"
  [mean]="--level video --aggregator mean"
  [dual_vlad_imnet]="--level video --aggregator dual_vlad"
)
FRAME_SYSTEMS="frame frame_ft frame_imnet"
VIDEO_SYSTEMS="dual_vlad netvlad mean dual_vlad_imnet"
RUN_NAMES=""
for sys in $FRAME_SYSTEMS $VIDEO_SYSTEMS; do RUN_NAMES+=" ${sys}_f1 ${sys}_f2"; done

if run_stage 0; then
  flags=()
  [[ $OVERWRITE == 1 ]] && flags+=(--overwrite)
  DATA_ROOT=$(dirname "$(dirname "$DATA")") SKD=$SKD bash "$ROOT/data_scripts/lus.sh" ${flags[@]+"${flags[@]}"}
fi

pretrain() {  # pretrain SEED: skipped when finished, resumed when unfinished
  local rd=$RUNS/dino_seed$1
  if [[ -f $rd/train_summary.json && $OVERWRITE != 1 ]]; then log "$rd: finished, skipping"; return; fi
  if [[ -f $rd/config.yaml && $OVERWRITE != 1 ]]; then
    "$SKD" lus pretrain --run-dir "$rd" --data "$DATA" --resume --device "$DEVICE"
    return
  fi
  local args=(lus pretrain --config recipes/lus/dino.yaml --data "$DATA" --run-dir "$rd" --seed "$1" --device "$DEVICE")
  [[ -n $INIT ]] && args+=(--init "$INIT")
  [[ $OVERWRITE == 1 ]] && args+=(--overwrite)
  log "${args[*]}"
  "$SKD" "${args[@]}"
}

if run_stage 1; then
  [[ -f $DATA/prep.json ]] || die "no prepared dataset in $DATA (stage 0, or --data DIR)"
  [[ -n $INIT ]] || log "warning: no --init: DINO from scratch (the paper continues from ImageNet DINO ViT-S/8)"
  for seed in $SEEDS; do pretrain "$seed"; done
fi

if run_stage 2; then
  for seed in $SEEDS; do
    for sys in $FRAME_SYSTEMS $VIDEO_SYSTEMS; do
      backbone=$RUNS/dino_seed$seed
      if [[ $sys == *_imnet ]]; then
        [[ -n $INIT ]] || { log "$sys needs --init (the ImageNet DINO checkpoint): skipped"; continue; }
        backbone=$INIT
      fi
      [[ " $VIDEO_SYSTEMS " == *" $sys "* ]] && config=recipes/lus/video.yaml || config=recipes/lus/frame.yaml
      read -r -a sys_args <<< "${SYSTEM_ARGS[$sys]}"
      for fold in 1 2; do
        CONFIG=$config skd_train lus "$RUNS/${sys}_f${fold}_seed$seed" "$DATA" "$seed" --fold "$fold" \
          --backbone "$backbone" "${sys_args[@]}"
      done
    done
  done
fi

evaluate() { to_file "$RESULTS/$(basename "$1").json" "$SKD" lus eval --run-dir "$1" --device "$DEVICE" --json; }
if run_stage 3; then each_finished_run "$RUN_NAMES" evaluate; fi

if run_stage 4; then
  [[ -d $RESULTS ]] || die "no results in $RESULTS (stage 3 first)"
  results_table "$RESULTS" --glob '*_f[12]_seed*.json' --group '(?P<system>.+)_f[12]_seed\d+' \
    --sub 'KNN (k on train fold)=knn' --sub 'KNN max over k (official)=knn.max_over_k' \
    --metric accuracy=accuracy:100 --metric 'weighted F1=weighted_f1:100' --metric AUC=auc:100 \
    --caption "mean ± sample std over folds x seeds, in %. Paper (official README): KNN 75.05, fine-tuned frame \
82.47 (80.13 / 84.81), video 83.57 / 81.62 (~82.6)"
fi

if run_stage 5; then
  first=${SEEDS%% *}
  rd=$RUNS/dual_vlad_f1_seed$first
  [[ -f $rd/train_summary.json ]] || die "no finished run in $rd (stage 2 first)"
  "$SKD" lus export --run-dir "$rd" --overwrite
  clip=$(python3 -c "import csv,sys; r=[x for x in csv.DictReader(open(sys.argv[1])) if x['kind']=='video']; print(r[0]['source'] if r else '')" "$DATA/clips.csv")
  if [[ -n $clip && -e $clip ]]; then
    "$SKD" lus score --model "$rd/export" --video "$clip" --out "$RUNS/score" --overwrite
  else
    log "no source clip recorded in $DATA/clips.csv: scoring skipped"
  fi
fi
