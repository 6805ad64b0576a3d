#!/usr/bin/env bash
# Prepare FUSAR-Ship and OpenSARShip for `skd sar`. Both need registration, so nothing is downloaded here:
# you fetch the archives yourself, unpack them, and point this script at them.
#
# Usage:
#   data_scripts/sar.sh [--fusar-raw DIR] [--opensarship-raw DIR] [--data-root DIR] [--size 128]
#                       [--shots K] [--label-noise P] [--seed S] [--overwrite]
#   Environment twins: FUSAR_RAW, OPENSARSHIP_RAW, DATA_ROOT, SIZE, SHOTS, LABEL_NOISE, SEED, OVERWRITE=1,
#   FUSAR_CLASSES, OPENSARSHIP_CLASSES, OPENSARSHIP_VARIANT, OPENSARSHIP_POL, SKD.
#
# Getting the data:
#   FUSAR-Ship v1.0 (Hou et al., SCIENCE CHINA Information Sciences 2020): request it from the Fudan
#     EMW lab (emwlab.fudan.edu.cn/resources/list.htm, the FUSAR-Ship entry; a signed application).
#     Unpack so that FUSAR_RAW holds Category/Subcategory/Ship_CxxSyyNzzzz.tiff and meta.csv (if the
#     release has meta.xls only, save it as CSV with the columns
#     id,mmsi,length,width,polarMode,centerLookAngle,heightspace,widthspace,path).
#   OpenSARShip (Huang et al., IEEE JSTARS 11(1), 2018): register at the OpenSAR platform of Shanghai Jiao
#     Tong University (opensar.sjtu.edu.cn) and download the OpenSARShip (1.0 or 2.0) archives; unpack every
#     scene folder (each with Patch/, Patch_Uint8/, Patch_Cal/, Patch_RGB/) under OPENSARSHIP_RAW.
#     The class is read from the chip's file-name prefix (before the first "_") and the polarisation from
#     its _vv/_vh suffix; if your release names chips otherwise, pass --name-regex to `skd sar prep`.
#
# Steps (each skipped when its prepared directory exists, unless --overwrite):
#   1. skd sar prep --source fusar --raw $FUSAR_RAW --classes $FUSAR_CLASSES --crop 256 --size $SIZE
#      -> $DATA_ROOT/fusar  (512x512 GF-3 chips, ship at the centre: centre crop 256, resize)
#   2. skd sar prep --source opensarship --raw $OPENSARSHIP_RAW --variant $OPENSARSHIP_VARIANT
#      --pol $OPENSARSHIP_POL --classes $OPENSARSHIP_CLASSES --size $SIZE -> $DATA_ROOT/opensarship
#   With --shots K / --label-noise P the directories get a suffix (_k10, _n0.2): the paper's setting is
#   few and noisy chips, and both are recorded in prep.json.
# The class subsets are OUR defaults (the paper's subsets are not known, recipes/sar/README.md §3); the
# prep error message lists the classes a tree really has. Licences: both datasets are for research use
# under their providers' terms; this repository redistributes neither. Not run in CI.
set -euo pipefail

FUSAR_RAW=${FUSAR_RAW:-}
OPENSARSHIP_RAW=${OPENSARSHIP_RAW:-}
DATA_ROOT=${DATA_ROOT:-data/sar}
SIZE=${SIZE:-128}
SHOTS=${SHOTS:-0}
LABEL_NOISE=${LABEL_NOISE:-0}
SEED=${SEED:-0}
OVERWRITE=${OVERWRITE:-0}
SKD=${SKD:-skd}
FUSAR_CLASSES=${FUSAR_CLASSES:-BulkCarrier,ContainerShip,GeneralCargo,Fishing,Tanker,Dredger,Tug,Passenger}
OPENSARSHIP_CLASSES=${OPENSARSHIP_CLASSES:-BulkCarrier,ContainerShip,Tanker}
OPENSARSHIP_VARIANT=${OPENSARSHIP_VARIANT:-patch_uint8}
OPENSARSHIP_POL=${OPENSARSHIP_POL:-vv}

die() { echo "sar.sh: error: $*" >&2; exit 1; }
log() { echo "sar.sh: $*" >&2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --fusar-raw)       FUSAR_RAW=$2; shift 2 ;;
    --opensarship-raw) OPENSARSHIP_RAW=$2; shift 2 ;;
    --data-root)       DATA_ROOT=$2; shift 2 ;;
    --size)            SIZE=$2; shift 2 ;;
    --shots)           SHOTS=$2; shift 2 ;;
    --label-noise)     LABEL_NOISE=$2; shift 2 ;;
    --seed)            SEED=$2; shift 2 ;;
    --overwrite)       OVERWRITE=1; shift ;;
    -h|--help)         sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *)                 die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ -n $FUSAR_RAW || -n $OPENSARSHIP_RAW ]] || die "give --fusar-raw and/or --opensarship-raw (see --help)"

suffix=""
[[ $SHOTS != 0 ]] && suffix+="_k$SHOTS"
[[ $LABEL_NOISE != 0 ]] && suffix+="_n$LABEL_NOISE"
common=(--size "$SIZE" --shots "$SHOTS" --label-noise "$LABEL_NOISE" --seed "$SEED")
[[ $OVERWRITE == 1 ]] && common+=(--overwrite)

prep() {  # prep OUT ARGS...: skipped when OUT holds a prepared dataset
  local out=$1
  shift
  if [[ -f $out/prep.json && $OVERWRITE != 1 ]]; then log "$out: prepared already (--overwrite redoes it)"; return; fi
  log "$SKD sar prep $* --out $out ${common[*]}"
  "$SKD" sar prep "$@" --out "$out" "${common[@]}"
}

if [[ -n $FUSAR_RAW ]]; then
  [[ -d $FUSAR_RAW ]] || die "$FUSAR_RAW: not a directory"
  prep "$DATA_ROOT/fusar$suffix" --source fusar --raw "$FUSAR_RAW" --classes "$FUSAR_CLASSES" --crop 256
fi
if [[ -n $OPENSARSHIP_RAW ]]; then
  [[ -d $OPENSARSHIP_RAW ]] || die "$OPENSARSHIP_RAW: not a directory"
  prep "$DATA_ROOT/opensarship$suffix" --source opensarship --raw "$OPENSARSHIP_RAW" \
    --variant "$OPENSARSHIP_VARIANT" --pol "$OPENSARSHIP_POL" --classes "$OPENSARSHIP_CLASSES"
fi
