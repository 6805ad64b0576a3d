#!/usr/bin/env bash
# Get Sleep-EDF Expanded (PhysioNet, open) and prepare it, plus SHHS1 (NSRR, needs a data-use
# agreement: downloaded by you with the NSRR tool) for `skd sleep`.
#
# Usage:
#   data_scripts/sleep_data.sh [--data-root DIR] [--subjects 0-19] [--shhs-raw DIR] [--shhs-subjects FILE]
#                              [--no-download] [--fs 100] [--overwrite]
#   Environment twins: DATA_ROOT, SUBJECTS, SHHS_RAW, SHHS_SUBJECTS, NO_DOWNLOAD=1, FS, OVERWRITE=1, SKD.
#
# Steps (each skipped when its output exists; re-running is cheap and resumes):
#   1. Sleep-EDF: wget the sleep-cassette PSG + hypnogram pairs of the subjects in $SUBJECTS
#      (default 0-19 = Sleep-EDF-20, 39 recordings, ~1.6 GB) from
#      https://physionet.org/files/sleep-edfx/1.0.0/sleep-cassette/ into $DATA_ROOT/sleep-edf/,
#      then check them against PhysioNet's SHA256SUMS.txt.
#   2. skd sleep prep --source sleep-edf --subjects $SUBJECTS -> $DATA_ROOT/prepared/sleep_edf
#      (EEG Fpz-Cz, 100 Hz, S3+S4 -> N3, wake trimmed to ±30 min, ?/movement inside the night masked).
#   3. SHHS1 (only with --shhs-raw): the NSRR layout you downloaded, e.g. with the NSRR gem
#        gem install nsrr && nsrr download shhs/polysomnography/edfs/shhs1 --token=YOUR_TOKEN
#        nsrr download shhs/polysomnography/annotations-events-nsrr/shhs1 --token=YOUR_TOKEN
#      then skd sleep prep --source shhs --raw $SHHS_RAW -> $DATA_ROOT/prepared/shhs
#      (channel `EEG` = C4-A1, 125 -> 100 Hz; a night without it reads C3-A2 `EEG(sec)`, with a warning
#      in prep.json). --shhs-subjects FILE keeps only the SHHS ids listed there (e.g. the common
#      329-subject selection). Prep is incremental: kill it and run again; a night that fails to read
#      is skipped and listed in prepared/shhs/skipped.jsonl.
# Licences: Sleep-EDF ODC-By 1.0 (cite Kemp et al. 2000 and PhysioNet); SHHS: NSRR data-use
# agreement, no redistribution. Not run in CI.
set -euo pipefail

DATA_ROOT=${DATA_ROOT:-data/sleep}
SUBJECTS=${SUBJECTS:-0-19}
SHHS_RAW=${SHHS_RAW:-}
SHHS_SUBJECTS=${SHHS_SUBJECTS:-}
NO_DOWNLOAD=${NO_DOWNLOAD:-0}
FS=${FS:-100}
OVERWRITE=${OVERWRITE:-0}
SKD=${SKD:-skd}
BASE_URL=https://physionet.org/files/sleep-edfx/1.0.0

die() { echo "sleep_data.sh: error: $*" >&2; exit 1; }
log() { echo "sleep_data.sh: $*" >&2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --data-root)   DATA_ROOT=$2; shift 2 ;;
    --subjects)    SUBJECTS=$2; shift 2 ;;
    --shhs-raw)    SHHS_RAW=$2; shift 2 ;;
    --shhs-subjects) SHHS_SUBJECTS=$2; shift 2 ;;
    --no-download) NO_DOWNLOAD=1; shift ;;
    --fs)          FS=$2; shift 2 ;;
    --overwrite)   OVERWRITE=1; shift ;;
    -h|--help)     sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *)             die "unknown argument '$1' (see --help)" ;;
  esac
done

prep_flags=(--fs "$FS")
[[ $OVERWRITE == 1 ]] && prep_flags+=(--overwrite)
SEDF=$DATA_ROOT/sleep-edf

# subject ranges "0-19" / "0,3,5-7" -> SC4ss* patterns
subject_patterns() {
  python3 - "$1" <<'PY'
import sys
out = []
for part in sys.argv[1].split(","):
    lo, _, hi = part.partition("-")
    out += [f"SC4{s:02d}*" for s in range(int(lo), int(hi or lo) + 1)]
print(",".join(f"{p}-PSG.edf,{p}-Hypnogram.edf" for p in out))
PY
}

if [[ $NO_DOWNLOAD != 1 ]]; then
  command -v wget >/dev/null || die "wget is needed to download Sleep-EDF"
  mkdir -p "$SEDF"
  log "downloading Sleep-EDF sleep-cassette subjects $SUBJECTS -> $SEDF (files already there are skipped)"
  wget --no-verbose --recursive --no-parent --no-host-directories --cut-dirs=4 --no-clobber \
       --accept "$(subject_patterns "$SUBJECTS")" --directory-prefix "$SEDF" "$BASE_URL/sleep-cassette/"
  wget --no-verbose --output-document "$SEDF/SHA256SUMS.txt" "$BASE_URL/SHA256SUMS.txt"
  (cd "$SEDF" && sed -n 's#  sleep-cassette/#  #p' SHA256SUMS.txt | sha256sum --check --ignore-missing --quiet) \
    || die "checksum mismatch in $SEDF (delete the bad file and run again)"
fi

if [[ -f $DATA_ROOT/prepared/sleep_edf/prep.json && $OVERWRITE != 1 ]]; then
  log "prepared Sleep-EDF exists: $DATA_ROOT/prepared/sleep_edf"
else
  "$SKD" sleep prep --source sleep-edf --raw "$SEDF" --subjects "$SUBJECTS" --out "$DATA_ROOT/prepared/sleep_edf" "${prep_flags[@]}"
fi

if [[ -n $SHHS_RAW ]]; then
  [[ -d $SHHS_RAW ]] || die "--shhs-raw $SHHS_RAW is not a directory"
  if [[ -f $DATA_ROOT/prepared/shhs/prep.json && $OVERWRITE != 1 ]]; then
    log "prepared SHHS exists: $DATA_ROOT/prepared/shhs"
  else
    shhs_flags=()
    if [[ -n $SHHS_SUBJECTS ]]; then
      [[ -f $SHHS_SUBJECTS ]] || die "--shhs-subjects $SHHS_SUBJECTS is not a file"
      shhs_flags=(--subjects "$SHHS_SUBJECTS")
    fi
    "$SKD" sleep prep --source shhs --raw "$SHHS_RAW" --out "$DATA_ROOT/prepared/shhs" "${prep_flags[@]}" \
      ${shhs_flags[@]+"${shhs_flags[@]}"}
  fi
else
  log "no --shhs-raw: SHHS needs an NSRR data-use agreement; download it yourself (see --help)"
fi
