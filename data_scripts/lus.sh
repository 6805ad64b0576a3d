#!/usr/bin/env bash
# Get the COVID-19 POCUS dataset's CC BY clips (Born et al., github.com/jannisborn/covid19_ultrasound) and prepare
# them for `skd lus`; document how to prepare the private MeDiVLAD data. Not run in CI.
#
# Usage:
#   data_scripts/lus.sh [--data-root DIR] [--size 224] [--fps 15] [--overwrite] [--medivlad-raw DIR]
#   Environment twins: DATA_ROOT, SIZE, FPS, OVERWRITE=1, MEDIVLAD_RAW, SKD.
#
# Steps (each skipped when its output exists):
#   1. git clone --depth 1 the covid19_ultrasound repository into $DATA_ROOT/covid19_ultrasound (~600 MB).
#   2. Keep only the rows whose `License` is CC BY 4.0 or CC BY 2.0 (the rest is CC BY-NC, NC-SA, ND or unlicensed:
#      usable for research under those terms, but this script does not select them for you): a filtered copy of
#      data/dataset_metadata.csv is written to $DATA_ROOT/pocus_ccby/dataset_metadata.csv beside symlinks to the files.
#   3. skd lus prep --source pocus --raw $DATA_ROOT/pocus_ccby --out $DATA_ROOT/prepared/pocus_ccby
#      (`Lung Severity Score` 0-3 -> classes 0 / 1-2 / 3; rows without a score are kept unlabelled for pretraining;
#      patient-disjoint folds from `Patient ID / Name`; clips resampled to $FPS fps and resized to $SIZE px).
#   4. The paper's data (283 videos, 156 patients; COVIDx-US + a private Thessaloniki set) is not public. With access,
#      lay it out as the official repository does (data/15_frames_processed/*.npy, data/labeled_frames/*.png,
#      data/2_fold_validation/*.csv) and pass --medivlad-raw DIR: skd lus prep --source medivlad.
# Licences: per file (`License` column); CC BY requires attribution: cite the article in the `DOI` column and
# Born J et al., Applied Sciences 2021. This repository redistributes none of it except tests/fixtures/lus.
set -euo pipefail

DATA_ROOT=${DATA_ROOT:-data/lus}
SIZE=${SIZE:-224}
FPS=${FPS:-15}
OVERWRITE=${OVERWRITE:-0}
MEDIVLAD_RAW=${MEDIVLAD_RAW:-}
SKD=${SKD:-skd}
REPO_URL=https://github.com/jannisborn/covid19_ultrasound.git

die() { echo "lus.sh: error: $*" >&2; exit 1; }
log() { echo "lus.sh: $*" >&2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --data-root)    DATA_ROOT=$2; shift 2 ;;
    --size)         SIZE=$2; shift 2 ;;
    --fps)          FPS=$2; shift 2 ;;
    --overwrite)    OVERWRITE=1; shift ;;
    --medivlad-raw) MEDIVLAD_RAW=$2; shift 2 ;;
    -h|--help)      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *)              die "unknown argument '$1' (see --help)" ;;
  esac
done
OW=(); [[ "$OVERWRITE" == 1 ]] && OW=(--overwrite)

mkdir -p "$DATA_ROOT"
if [[ ! -d "$DATA_ROOT/covid19_ultrasound/data" ]]; then
  log "cloning $REPO_URL"
  git clone --depth 1 "$REPO_URL" "$DATA_ROOT/covid19_ultrasound"
fi

CCBY="$DATA_ROOT/pocus_ccby"
if [[ ! -f "$CCBY/dataset_metadata.csv" || "$OVERWRITE" == 1 ]]; then
  log "selecting the CC BY rows"
  rm -rf "$CCBY"; mkdir -p "$CCBY"
  python3 - "$DATA_ROOT/covid19_ultrasound" "$CCBY" <<'PY'
import csv, os, sys
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
files = {p.stem: p for p in (src / "data").rglob("*") if p.is_file()}
with open(src / "data" / "dataset_metadata.csv", newline="", encoding="utf-8") as fh:
    reader = csv.DictReader(fh)
    rows = [r for r in reader if r.get("License", "").strip() in ("CC BY 4.0", "CC BY 2.0")]
    fields = reader.fieldnames
kept = 0
for r in rows:
    f = files.get(r["Filename"].strip())
    if f is not None:
        os.symlink(f.resolve(), dst / f.name)
        kept += 1
with open(dst / "dataset_metadata.csv", "w", newline="", encoding="utf-8") as fh:
    w = csv.DictWriter(fh, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
print(f"{len(rows)} CC BY rows, {kept} files present", file=sys.stderr)
PY
fi

"$SKD" lus prep --source pocus --raw "$CCBY" --out "$DATA_ROOT/prepared/pocus_ccby" --size "$SIZE" --fps "$FPS" "${OW[@]}"

if [[ -n "$MEDIVLAD_RAW" ]]; then
  "$SKD" lus prep --source medivlad --raw "$MEDIVLAD_RAW" --out "$DATA_ROOT/prepared/medivlad" --size "$SIZE" "${OW[@]}"
fi
log "done: $DATA_ROOT/prepared"
