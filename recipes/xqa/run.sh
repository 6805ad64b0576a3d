#!/usr/bin/env bash
# Carrino, Escolano & Fonollosa (arXiv 2309.17134) on real data: stage 1 (mBERT on SQuAD), then the
# ntl x T grid of cross-lingual sampling + SKD on XQuAD, model selection by G-XLT F1 on MLQA-dev, and
# the selected systems on MLQA-test, XQuAD (el ru tr th) and TyDiQA-GoldP, with Wilcoxon tests vs CE.
#
# Usage (from the repository root):
#   recipes/xqa/run.sh [--stage N] [--stop-stage M] [--mbert DIR] [--raw DIR] [--data DIR] [--runs DIR]
#                      [--ntls "0 1 2 3 4 5 6"] [--temps "2 4 8 18"] [--systems "ce skd skd_map"]
#                      [--seeds "3"] [--device cuda|cpu] [--ngpu N] [--train-args "..."] [--overwrite]
#   Environment twins: MBERT, RAW, DATA, RUNS, NTLS, TEMPS, SYSTEMS, SEEDS, DEVICE, NGPU, TRAIN_ARGS, OVERWRITE=1
#   (recipes/common.sh parses them; a flag wins over the variable).
#   MBERT is a local bert-base-multilingual-cased directory (e.g. `huggingface-cli download
#   bert-base-multilingual-cased --local-dir /models/mbert`); skd downloads nothing itself.
#
# Stages (default 0..5):
#   0  data: data_scripts/xqa.sh (XQuAD, MLQA, TyDiQA-GoldP, SQuAD) + one XQuAD training set per ntl
#        -> $DATA/{mlqa, tydiqa, squad, xquad-ntl<N>}
#   1  stage 1 "mBERT-qa-en": CE on SQuAD v1.1 (recipes/xqa/mbert_squad_stage1.yaml) -> $RUNS/stage1,
#      exported to $RUNS/stage1/export/hf (the --init of every stage-2 run)
#   2  stage 2 grid (recipes/xqa/mbert_xquad.yaml): for every ntl, seed and system
#        ce        --baseline (one run per ntl: T plays no part)  -> $RUNS/grid/ntl<N>/ce_seed<S>
#        skd       --no-map-coefficient, for every T              -> $RUNS/grid/ntl<N>/skd_t<T>_seed<S>
#        skd_map   (the default), for every T                     -> $RUNS/grid/ntl<N>/skd_map_t<T>_seed<S>
#   3  eval every grid run on MLQA-dev (G-XLT F1) -> $RUNS/results/dev/*.json, and the selection:
#      the best (ntl, T) per system -> $RUNS/results/selected.json (paper: CE ntl 3; SKD, SKD+mAP ntl 5, T 2)
#   4  the selected runs (and stage 1, the zero-shot row) on MLQA-test, XQuAD and TyDiQA-GoldP, and
#      the Wilcoxon signed-rank tests of SKD and SKD+mAP vs CE on MLQA-test
#   5  table: G-XLT / XLT EM and F1 per system and test set
#
# Re-running is safe: finished runs are skipped, unfinished ones resumed.
set -euo pipefail

CONFIG=${CONFIG:-recipes/xqa/mbert_xquad.yaml}
STAGE1_CONFIG=${STAGE1_CONFIG:-recipes/xqa/mbert_squad_stage1.yaml}
MBERT=${MBERT:-}
RAW=${RAW:-data/xqa_raw}
DATA=${DATA:-data/xqa}
RUNS=${RUNS:-runs/xqa}
NTLS=${NTLS:-"0 1 2 3 4 5 6"}
TEMPS=${TEMPS:-"2 4 8 18"}
SYSTEMS=${SYSTEMS:-"ce skd skd_map"}
SEEDS=${SEEDS:-3}
STOP_STAGE=${STOP_STAGE:-5}
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"  # options, run_stage, log, die, skd_train, to_file

RESULTS=$RUNS/results
STAGE1=$RUNS/stage1
INIT=$STAGE1/export/hf
declare -A SYSTEM_ARGS=([ce]="--baseline" [skd]="--no-map-coefficient" [skd_map]="")

grid_runs() {  # every grid run directory, one per line
  local ntl sys t seed
  for ntl in $NTLS; do for seed in $SEEDS; do for sys in $SYSTEMS; do
    if [[ $sys == ce ]]; then echo "$RUNS/grid/ntl$ntl/ce_seed$seed"
    else for t in $TEMPS; do echo "$RUNS/grid/ntl$ntl/${sys}_t${t}_seed$seed"; done; fi
  done; done; done
}

if run_stage 0; then
  flags=()
  [[ $OVERWRITE == 1 ]] && flags+=(--overwrite)
  ROOT=$RAW OUT=$DATA SKD=$SKD bash "$ROOT/data_scripts/xqa.sh" ${flags[@]+"${flags[@]}"}
  for ntl in $NTLS; do
    [[ -f $DATA/xquad-ntl$ntl/prep.json && $OVERWRITE != 1 ]] && continue
    "$SKD" xqa prep --source xquad --raw "$RAW/xquad" --ntl "$ntl" --seed 3 --languages en,es,de,ar,vi,hi,zh \
      --out "$DATA/xquad-ntl$ntl" ${flags[@]+"${flags[@]}"}
  done
fi

if run_stage 1; then
  [[ -n $MBERT && -f $MBERT/config.json ]] || die "--mbert DIR: a local bert-base-multilingual-cased directory"
  CONFIG=$STAGE1_CONFIG skd_train xqa "$STAGE1" "$DATA/squad" 42 --init "$MBERT" --set "data.dev=$DATA/mlqa"
  [[ -f $INIT/config.json && $OVERWRITE != 1 ]] || "$SKD" xqa export --run-dir "$STAGE1" --overwrite
fi

if run_stage 2; then
  [[ -f $INIT/config.json ]] || die "no stage-1 model in $INIT (stage 1 first)"
  while read -r rd; do
    name=$(basename "$rd"); ntl=$(basename "$(dirname "$rd")"); ntl=${ntl#ntl}
    sys=${name%%_t*}; sys=${sys%_seed*}; seed=${name##*_seed}
    read -r -a sys_args <<< "${SYSTEM_ARGS[$sys]}"
    t_args=()
    [[ $name =~ _t([0-9]+)_ ]] && t_args=(--temperature "${BASH_REMATCH[1]}")
    skd_train xqa "$rd" "$DATA/xquad-ntl$ntl" "$seed" --init "$INIT" --set "data.dev=$DATA/mlqa" \
      ${sys_args[@]+"${sys_args[@]}"} ${t_args[@]+"${t_args[@]}"}
  done < <(grid_runs)
fi

if run_stage 3; then
  while read -r rd; do
    [[ -f $rd/train_summary.json ]] || { log "no finished run in $rd, skipping"; continue; }
    out=$RESULTS/dev/$(basename "$(dirname "$rd")")_$(basename "$rd").json
    [[ -f $out && $OVERWRITE != 1 ]] || to_file "$out" "$SKD" xqa eval --run-dir "$rd" --data "$DATA/mlqa" \
      --suite mlqa --split dev --device "$DEVICE" --json
  done < <(grid_runs)
  python3 - "$RESULTS" "$RUNS" <<'PY'
import json, sys
from pathlib import Path
results, runs = Path(sys.argv[1]), Path(sys.argv[2])
best = {}
for p in sorted((results / "dev").glob("*.json")):
    r = json.loads(p.read_text())
    system = r["method"]
    if system not in best or r["gxlt_f1"] > best[system]["gxlt_f1"]:
        best[system] = {"run_dir": r["run_dir"], "gxlt_f1": r["gxlt_f1"], "xlt_f1": r["xlt_f1"], "file": p.name}
if not best:
    sys.exit("no dev results")
(results / "selected.json").write_text(json.dumps(best, indent=2) + "\n")
for system, b in best.items():
    print(f"{system:10s} MLQA-dev G-XLT F1 {b['gxlt_f1']:.2f}  <- {b['run_dir']}")
PY
fi

if run_stage 4; then
  [[ -f $RESULTS/selected.json ]] || die "no selection in $RESULTS/selected.json (stage 3 first)"
  mapfile -t selected < <(python3 -c "import json,sys; [print(k, v['run_dir']) for k, v in json.load(open(sys.argv[1])).items()]" "$RESULTS/selected.json")
  for line in "${selected[@]}" "zero_shot $STAGE1"; do
    read -r sys rd <<< "$line"
    for suite in mlqa xquad tydiqa; do
      case $suite in mlqa) data=$DATA/mlqa ;; xquad) data=$RAW/xquad ;; tydiqa) data=$DATA/tydiqa ;; esac
      split=test; [[ $suite == tydiqa ]] && split=dev
      to_file "$RESULTS/test/${sys}_$suite.json" "$SKD" xqa eval --run-dir "$rd" --data "$data" --suite "$suite" \
        --split "$split" --device "$DEVICE" --json
    done
  done
  ce=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['ce']['run_dir'])" "$RESULTS/selected.json")
  for line in "${selected[@]}"; do
    read -r sys rd <<< "$line"
    [[ $sys == ce ]] && continue
    to_file "$RESULTS/test/wilcoxon_${sys}_vs_ce.json" "$SKD" xqa eval --compare "$rd" "$ce" --json
  done
fi

if run_stage 5; then
  [[ -d $RESULTS/test ]] || die "no test results in $RESULTS/test (stage 4 first)"
  python3 - "$RESULTS/test" <<'PY'
import json, sys
from pathlib import Path
folder = Path(sys.argv[1])
fmt = lambda v: "   -  " if v is None else f"{v:6.2f}"
print(f"{'system':10s} {'test set':8s} {'G-XLT EM':>8s} {'G-XLT F1':>8s} {'XLT EM':>8s} {'XLT F1':>8s}")
for p in sorted(folder.glob("*_*.json")):
    if p.name.startswith("wilcoxon"):
        continue
    r = json.loads(p.read_text())
    system, suite = p.stem.rsplit("_", 1)
    print(f"{system:10s} {suite:8s} {fmt(r['gxlt_em']):>8s} {fmt(r['gxlt_f1']):>8s} {fmt(r['xlt_em']):>8s} {fmt(r['xlt_f1']):>8s}")
for p in sorted(folder.glob("wilcoxon_*.json")):
    r = json.loads(p.read_text())
    print(f"{p.stem}: G-XLT p = {r['gxlt']['p_value']:.3g}, XLT p = {r['xlt']['p_value']:.3g} (example-level F1)")
PY
fi
