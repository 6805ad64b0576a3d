# Shared by every recipes/<task>/run.sh (source it after setting the script's defaults), the way ESPnet's
# utils/parse_options.sh is: option parsing, stage gating, logging, the torchrun launcher, the
# train-one-run-per-seed step that skips finished runs and resumes unfinished ones, and the results table.
#
# Options. Every variable the script gave a default (UPPER_CASE) can be set by its environment twin or by
# --lower-case-name VALUE (a flag wins over the variable): --runs DIR sets RUNS, --train-args "..." sets
# TRAIN_ARGS. --overwrite sets OVERWRITE=1. --stage N / --stop-stage M run stages N..M. --help prints
# the script's header comment. An unknown option is an error.
#
# Defaults every recipe shares (a script may set its own before sourcing):
#   STAGE=0 STOP_STAGE=99 DEVICE=cuda NGPU=1 SEEDS=0 TRAIN_ARGS="" OVERWRITE=0 SKD=skd
# Then:
#   run_stage N                  true when stage N is between --stage and --stop-stage
#   log MSG / die MSG            messages on stderr (die exits 1)
#   skd_launch ARGS...           `skd ARGS` (or torchrun over NGPU GPUs for `train`)
#   skd_train TASK RD DATA SEED [ARGS...]
#                                train one run into RD: skipped when finished, resumed when unfinished,
#                                else started with --config $CONFIG --seed SEED ARGS $TRAIN_ARGS
#   each_finished_run "SYS..." CMD [ARGS...]
#                                CMD ARGS RUN_DIR for every finished $RUNS/<sys>_seed<S> (others are logged)
#   to_file DEST CMD...          CMD's stdout into DEST, only if CMD succeeds (no half-written results)
#   results_table DIR ARGS...    the Markdown table of mean ± sample std over seeds of DIR's result JSON files
#                                (python3 -m skdcli.engine.results DIR ARGS: --glob, --metric 'LABEL=PATH:SCALE', ...)
#   ROOT                         the repository root; TRAIN_EXTRA the words of TRAIN_ARGS

: "${STAGE:=0}" "${STOP_STAGE:=99}" "${DEVICE:=cuda}" "${NGPU:=1}" "${SEEDS:=0}" "${TRAIN_ARGS:=}"
: "${OVERWRITE:=0}" "${SKD:=skd}"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { echo "$(basename "$0"): $*" >&2; }
die() { echo "$(basename "$0"): error: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0 ;;
    --overwrite)
      OVERWRITE=1; shift ;;
    --*)
      name=${1#--}
      var=$(echo "${name//-/_}" | tr '[:lower:]' '[:upper:]')
      [[ $name =~ ^[a-z][a-z0-9-]*$ && -v $var ]] || die "unknown option '$1' (see --help)"
      [[ $# -ge 2 ]] || die "option '$1' needs a value"
      printf -v "$var" '%s' "$2"
      shift 2 ;;
    *)
      die "unknown argument '$1' (see --help)" ;;
  esac
done
unset name var
[[ $STAGE =~ ^[0-9]+$ && $STOP_STAGE =~ ^[0-9]+$ ]] || die "--stage/--stop-stage take integers"
[[ $NGPU =~ ^[0-9]+$ ]] || die "--ngpu takes an integer"
read -r -a TRAIN_EXTRA <<< "$TRAIN_ARGS"

run_stage() { [[ $STAGE -le $1 && $STOP_STAGE -ge $1 ]]; }

skd_launch() {
  if [[ $NGPU -gt 1 && ${2:-} == train ]]; then
    torchrun --standalone --nproc-per-node "$NGPU" -m skdcli "$@"
  else
    "$SKD" "$@"
  fi
}

skd_train() {
  local task=$1 rd=$2 data=$3 seed=$4
  shift 4
  if [[ -f $rd/train_summary.json && $OVERWRITE != 1 ]]; then
    log "$rd: finished run, skipping (--overwrite retrains)"
    return
  fi
  if [[ -f $rd/config.yaml && $OVERWRITE != 1 ]]; then
    log "$rd: unfinished run, resuming"
    skd_launch "$task" train --run-dir "$rd" --data "$data" --resume --device "$DEVICE"
    return
  fi
  local args=("$task" train --config "$CONFIG" --data "$data" --run-dir "$rd" --seed "$seed" --device "$DEVICE"
              "$@" ${TRAIN_EXTRA[@]+"${TRAIN_EXTRA[@]}"})
  [[ $OVERWRITE == 1 ]] && args+=(--overwrite)
  log "${args[*]}"
  skd_launch "${args[@]}"
}

to_file() {
  local dest=$1
  shift
  mkdir -p "$(dirname "$dest")"
  "$@" > "$dest.tmp"
  mv "$dest.tmp" "$dest"
}

each_finished_run() {
  local systems=$1 sys seed rd
  shift
  for sys in $systems; do
    for seed in $SEEDS; do
      rd=$RUNS/${sys}_seed$seed
      if [[ -f $rd/train_summary.json ]]; then "$@" "$rd"; else log "no finished run in $rd, skipping"; fi
    done
  done
}

results_table() {  # this checkout's skdcli (no torch imported), whatever skd is installed
  PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" python3 -m skdcli.engine.results "$@"
}
