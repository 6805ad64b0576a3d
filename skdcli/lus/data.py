"""LUS data: the real on-disk formats in, one prepared dataset out.

Readers (`skd lus prep --source ...`):

    medivlad   the official MeDiVLAD layout: data/15_frames_processed/*.npy clips (frames, 1, H, W),
               data/labeled_frames/{video}_index{i}_{score}.png, data/2_fold_validation/{train,validation}{1,2}.csv
    videos     a folder of videos (mp4, avi, mov, mpeg, gif...) or of frame folders + a labels CSV
               (file,label[,patient]); clips without a row are kept unlabelled (pretraining only)
    pocus      the COVID-19 POCUS dataset (data/dataset_metadata.csv, `Lung Severity Score`)
    synthetic  synth.write_medivlad_like, then the medivlad reader

Videos are decoded with PyAV (FFmpeg); each frame is converted to grey and resized to SIZE x SIZE
by libswscale (area interpolation) and clips are resampled to the target fps (the first frame in each
1/fps bin is kept; slower clips keep every frame). Unreadable and zero-frame clips are skipped and
listed in skipped.jsonl; a bad labels file (missing file, label outside 0-3) is an error.

Prepared layout (written to a temp directory and renamed into place; prep.json last):

    clips.csv      clip, name, patient, score, label, fold, kind, n_frames, offset, fps, source_fps, source
    frames.npy     uint8 (all clip frames, SIZE, SIZE); clip i = frames[offset : offset + n_frames]
    labelled.csv   name, clip, patient, frame, score, label, fold
    labelled.npy   uint8 (labelled frames, SIZE, SIZE)
    skipped.jsonl  {"file", "reason"} per skipped input
    prep.json      source, size, fps, counts per fold and class, fingerprint

`score` is the raw LUS score 0-3 (-1 = unlabelled), `label` the official 3-class merge (0 / 1-2 / 3),
`fold` the fold file that lists it for training (1 or 2; 0 = in neither, pretraining only).
Folds are patient-disjoint: from the official CSVs, otherwise assigned per patient (assign_folds).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image

from ..engine.errors import SkdError
from ..engine.io import atomic_write_json, read_json, staged_dir
from .config import SCORE_TO_CLASS

SOURCES = ("medivlad", "videos", "pocus", "synthetic")
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mpeg", ".mpg", ".gif", ".mkv", ".webm", ".m4v", ".wmv"}
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
LABELLED_NAME = re.compile(r"^(?P<video>.+)_index(?P<index>\d+)_(?P<score>[^_]+)$")
CLIP_FIELDS = [
    "clip",
    "name",
    "patient",
    "score",
    "label",
    "fold",
    "kind",
    "n_frames",
    "offset",
    "fps",
    "source_fps",
    "source",
]
LABELLED_FIELDS = ["name", "clip", "patient", "frame", "score", "label", "fold"]


class ClipError(Exception):
    """A clip that cannot be used (skipped and listed, not fatal)."""


# -- decoding ---------------------------------------------------------------------------------------------
def decode_video(path: str | Path, size: int, fps: float) -> tuple[np.ndarray, float | None, int]:
    """Decode a video file with PyAV: (uint8 frames (n, size, size) resampled to ``fps``, source fps,
    frames decoded). Raises ClipError for anything unreadable or empty."""
    import av

    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ClipError("no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame-threaded decoding, as a plain PyAV loop would use
            rate = stream.average_rate or stream.guessed_rate
            src_fps = float(rate) if rate else None
            frames, last_bin, decoded = [], None, 0
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else (decoded / src_fps if src_fps else None)
                decoded += 1
                if t is not None:
                    b = int(np.floor(t * fps + 1e-6))
                    if last_bin is not None and b <= last_bin:
                        continue
                    last_bin = b
                frames.append(frame.reformat(width=size, height=size, format="gray", interpolation="AREA").to_ndarray())
    except ClipError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise ClipError(
            f"cannot decode ({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    if not frames:
        raise ClipError("no frames")
    return np.stack(frames), src_fps, decoded


def to_uint8(a: np.ndarray) -> np.ndarray:
    """uint8 as is; floats in [0, 1] scaled by 255, larger floats taken as 0-255; clipped."""
    if a.dtype == np.uint8:
        return a
    a = a.astype(np.float32)
    if a.size and np.nanmax(a) <= 1.0 + 1e-6:
        a = a * 255.0
    return np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)


def resize_grey(img: np.ndarray, size: int) -> np.ndarray:
    """(H, W) or (H, W, C) array -> uint8 (size, size) grey (Pillow, box filter when shrinking)."""
    img = to_uint8(img)
    if img.ndim == 3:
        img = img[..., 0] if img.shape[2] == 1 else np.asarray(Image.fromarray(img[..., :3]).convert("L"))
    if img.shape != (size, size):
        shrinking = img.shape[0] > size or img.shape[1] > size
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.BOX if shrinking else Image.BILINEAR))
    return img


def read_image(path: str | Path, size: int) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return resize_grey(np.asarray(im.convert("L")), size)
    except (OSError, ValueError) as exc:
        raise ClipError(f"cannot read image ({exc.__class__.__name__})") from exc


def read_npy_clip(path: str | Path, size: int) -> np.ndarray:
    """An official .npy clip: (frames, 1, H, W) (also (frames, H, W)), uint8 or float."""
    try:
        a = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise ClipError(f"cannot read .npy ({exc.__class__.__name__}: {exc})") from exc
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3:
        raise ClipError(f"expected shape (frames, 1, H, W), got {tuple(a.shape)}")
    if a.shape[0] == 0:
        raise ClipError("no frames")
    return np.stack([resize_grey(np.asarray(f), size) for f in a])


def _natural_key(p: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def read_frame_folder(path: str | Path, size: int) -> np.ndarray:
    files = sorted((p for p in Path(path).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS), key=_natural_key)
    if not files:
        raise ClipError("no frames")
    return np.stack([read_image(f, size) for f in files])


def read_clip(path: Path, size: int, fps: float) -> tuple[np.ndarray, float | None, str]:
    """Any supported clip -> (frames, source fps or None, kind)."""
    if path.is_dir():
        return read_frame_folder(path, size), None, "video"
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return read_npy_clip(path, size), None, "video"
    if suffix in IMAGE_EXTENSIONS:
        return read_image(path, size)[None], None, "image"
    frames, src_fps, _ = decode_video(path, size, fps)
    return frames, src_fps, "video"


# -- label parsing -----------------------------------------------------------------------------------------
def parse_score(value: str, where: str, path: str | Path) -> int:
    text = str(value).strip()
    try:
        score = int(float(text)) if text else None
    except ValueError:
        score = None
    if score is None or str(score) != text.split(".")[0] or not 0 <= score <= 3:
        raise SkdError(f"{where}: label {text!r} is not a LUS score 0-3", path)
    return score


# -- patient-disjoint folds --------------------------------------------------------------------------------
def assign_folds(patient_labels: dict[str, list[int]], seed: int = 0) -> dict[str, int]:
    """Patients -> fold 1 or 2, patient-disjoint and balanced per class: patients are visited in a
    seeded order and each joins the fold where its clips add the least squared class imbalance.
    Unlabelled clips (-1) do not count."""
    rng = np.random.default_rng(seed)
    order = sorted(patient_labels)
    order = [order[i] for i in rng.permutation(len(order))]
    counts = {1: np.zeros(3), 2: np.zeros(3)}
    sizes = {1: 0, 2: 0}
    out = {}
    for patient in order:
        c = np.bincount([lab for lab in patient_labels[patient] if lab >= 0], minlength=3)[:3].astype(float)

        def cost(f: int, c: np.ndarray = c) -> tuple[float, int]:
            other = 3 - f
            return float(((counts[f] + c - counts[other]) ** 2).sum()), sizes[f]

        fold = min((1, 2), key=cost)
        counts[fold] += c
        sizes[fold] += 1
        out[patient] = fold
    return out


# -- sources -> a list of clip records ---------------------------------------------------------------------------
@dataclass
class ClipRecord:
    name: str
    patient: str
    score: int  # -1 = unlabelled
    source: Path | None  # None: labelled frames without their clip (frame level only)
    fold: int = 0
    labelled: list[tuple[str, int, Path | None]] | None = None  # (frame name, frame index, PNG path or None)


Skip = Callable[[str | Path, str], None]


def _medivlad_root(raw: Path) -> Path:
    for cand in (raw / "data", raw):
        if (cand / "15_frames_processed").is_dir() or (cand / "labeled_frames").is_dir():
            return cand
    raise SkdError("not the MeDiVLAD layout (expected data/15_frames_processed/ and data/labeled_frames/)", raw)


def _read_name_list(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="") as fh:
        names = [row[0].strip() for row in csv.reader(fh) if row and row[0].strip()]
    return [n[:-4] if n.lower().endswith((".png", ".npy")) else n for n in names]


def records_medivlad(raw: Path, skip: Skip) -> list[ClipRecord]:
    root = _medivlad_root(raw)
    clip_dir, frame_dir, fold_dir = root / "15_frames_processed", root / "labeled_frames", root / "2_fold_validation"
    records: dict[str, ClipRecord] = {}
    clip_paths = sorted(clip_dir.glob("*.npy")) if clip_dir.is_dir() else []
    listed = None
    if (root / "video_list.csv").is_file():
        listed = set(_read_name_list(root / "video_list.csv"))
    for p in clip_paths:
        name = p.stem
        if listed is not None and name not in listed:
            continue
        tail = name.rsplit("_", 1)[-1]
        score = parse_score(tail, f"clip name {name!r} (its last field is the score)", p) if tail.isdigit() else -1
        records[name] = ClipRecord(name, name.split("_", 1)[0], score, p, labelled=[])
    frames = sorted(frame_dir.glob("*.png")) if frame_dir.is_dir() else []
    for p in frames:
        m = LABELLED_NAME.match(p.stem)
        if not m:
            skip(p, "labelled frame name is not {video}_index{i}_{score}.png")
            continue
        score = parse_score(m["score"], "labelled frame name", p)
        video = m["video"]
        rec = records.get(video)
        if rec is None:  # a labelled frame whose clip is absent: usable at frame level only
            rec = ClipRecord(video, video.split("_", 1)[0], score, None, labelled=[])
            records[video] = rec
        if rec.score < 0:
            rec.score = score
        rec.labelled.append((p.stem, int(m["index"]), p))
    if not records:
        raise SkdError("no .npy clips and no labelled frames found", root)
    # folds: the official CSVs list labelled frame names; a video's fold is that of its frames
    frame_fold: dict[str, int] = {}
    for f in (1, 2):
        csv_path = fold_dir / f"train{f}.csv"
        if csv_path.is_file():
            for n in _read_name_list(csv_path):
                frame_fold[n] = f
    if frame_fold:
        for rec in records.values():
            folds = {frame_fold[n] for n, _, _ in rec.labelled if n in frame_fold}
            if len(folds) > 1:
                raise SkdError(f"video {rec.name} has labelled frames in both fold files", fold_dir)
            rec.fold = folds.pop() if folds else 0
        _check_patient_disjoint(records.values(), fold_dir)
    else:
        by_patient = _patient_labels(records.values())
        folds = assign_folds(by_patient)
        for rec in records.values():
            rec.fold = folds[rec.patient]
    return list(records.values())


def _patient_labels(records: Iterable[ClipRecord]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for rec in records:
        out.setdefault(rec.patient, []).append(SCORE_TO_CLASS[rec.score] if rec.score >= 0 else -1)
    return out


def _check_patient_disjoint(records: Iterable[ClipRecord], where: Path) -> None:
    seen: dict[str, int] = {}
    for rec in records:
        if rec.fold == 0:
            continue
        if seen.setdefault(rec.patient, rec.fold) != rec.fold:
            raise SkdError(f"patient {rec.patient} appears in both folds (folds must be patient-disjoint)", where)


def _video_inputs(folder: Path) -> list[Path]:
    out = []
    for p in sorted(folder.iterdir(), key=_natural_key):
        if p.name.startswith("."):
            continue
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS | {".npy"}:
            out.append(p)
        elif p.is_dir() and any(q.suffix.lower() in IMAGE_EXTENSIONS for q in p.iterdir()):
            out.append(p)
    return out


def records_videos(raw: Path, labels: Path | None, skip: Skip) -> list[ClipRecord]:
    if not raw.is_dir():
        raise SkdError("not a directory (expected a folder of videos or frame folders)", raw)
    labels = labels or raw / "labels.csv"
    rows: dict[Path, tuple[int, str | None]] = {}
    if labels.is_file():
        with open(labels, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip().lower() for f in (reader.fieldnames or [])]
            if "file" not in fields or "label" not in fields:
                raise SkdError(
                    f"needs the columns file,label[,patient]; got {','.join(reader.fieldnames or [])}", labels
                )
            for line, row in enumerate(reader, start=2):
                row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
                if not row.get("file"):
                    raise SkdError(f"line {line}: empty file name", labels)
                path = Path(row["file"]) if Path(row["file"]).is_absolute() else raw / row["file"]
                if not path.exists():
                    raise SkdError(f"line {line} names {row['file']!r}, which does not exist", labels)
                rows[path.resolve()] = (parse_score(row["label"], f"line {line}", labels), row.get("patient") or None)
    elif labels != raw / "labels.csv":
        raise SkdError("labels file not found", labels)
    inputs = _video_inputs(raw)
    for extra in rows:  # labelled files outside the top level (sub-folders)
        if extra not in {p.resolve() for p in inputs}:
            inputs.append(extra)
    if not inputs:
        raise SkdError(f"no videos ({', '.join(sorted(VIDEO_EXTENSIONS))}) or frame folders found", raw)
    records = []
    for p in inputs:
        score, patient = rows.get(p.resolve(), (-1, None))
        records.append(ClipRecord(p.stem if p.is_file() else p.name, patient or p.stem, score, p))
    folds = assign_folds(_patient_labels(records))
    for rec in records:
        rec.fold = folds[rec.patient]
    return records


POCUS_COLUMNS = ("Filename", "Lung Severity Score")


def records_pocus(raw: Path, skip: Skip) -> list[ClipRecord]:
    meta = next((p for p in (raw / "data" / "dataset_metadata.csv", raw / "dataset_metadata.csv") if p.is_file()), None)
    if meta is None:
        raise SkdError("no dataset_metadata.csv (expected the covid19_ultrasound repository or its data/ folder)", raw)
    files: dict[str, list[Path]] = {}
    for p in raw.rglob("*"):
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS | IMAGE_EXTENSIONS:
            files.setdefault(p.stem, []).append(p)
    records = []
    with open(meta, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in POCUS_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SkdError(f"missing column(s) {missing}", meta)
        for line, row in enumerate(reader, start=2):
            name = (row.get("Filename") or "").strip()
            if not name:
                continue
            found = files.get(name)
            if not found:
                skip(f"{meta}:{line}", f"{name}: file not in this copy of the dataset")
                continue
            score_text = (row.get("Lung Severity Score") or "").strip()
            score = parse_score(score_text, f"line {line} ({name})", meta) if score_text else -1
            patient = (row.get("Patient ID / Name") or "").strip() or name
            records.append(ClipRecord(name, f"pocus{patient}" if patient.isdigit() else patient, score, found[0]))
    if not records:
        raise SkdError("no metadata row names a file present under this folder", raw)
    folds = assign_folds(_patient_labels(records))
    for rec in records:
        rec.fold = folds[rec.patient]
    return records


# -- prep ---------------------------------------------------------------------------------------------------------
def _fingerprint(folder: Path) -> str:
    h = hashlib.sha256()
    for name in ("clips.csv", "labelled.csv", "frames.npy", "labelled.npy"):
        with open(folder / name, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    return h.hexdigest()[:16]


def _write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _save_stack(path: Path, arrays: list[np.ndarray], size: int) -> int:
    total = sum(len(a) for a in arrays)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(total, size, size))
    pos = 0
    for a in arrays:
        out[pos : pos + len(a)] = a
        pos += len(a)
    out.flush()
    del out
    return total


def prepare_dataset(
    source: str,
    raw: str | Path | None,
    out: str | Path,
    *,
    size: int = 224,
    fps: float = 15.0,
    labels: str | Path | None = None,
    frames_per_clip: int = 3,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Read ``raw`` with the ``source`` reader into the prepared layout at ``out``; returns prep.json."""
    if source not in SOURCES:
        raise SkdError(f"--source must be one of {', '.join(SOURCES)}, got '{source}'")
    if size < 8 or fps <= 0 or frames_per_clip < 1:
        raise SkdError("need --size >= 8, --fps > 0 and --frames-per-clip >= 1")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SkdError("exists and is not a directory; cannot write the prepared dataset here", out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        what = "a prepared dataset" if (out / "prep.json").exists() else "files (the directory is not empty)"
        raise SkdError(f"already holds {what}; pass --overwrite to replace it", out)
    t0 = time.perf_counter()
    skipped: list[dict] = []

    def skip(path, reason: str) -> None:
        skipped.append({"file": str(path), "reason": reason})

    if source == "synthetic":
        from .synth import write_medivlad_like

        if raw is None:
            raise SkdError("--source synthetic needs --raw DIR (where the synthetic MeDiVLAD layout is written)")
        raw = write_medivlad_like(raw, size=size)
        source_reader = "medivlad"
    else:
        if raw is None:
            raise SkdError(f"--source {source} needs --raw PATH")
        source_reader = source
    raw = Path(raw)
    if not raw.exists():
        raise SkdError("not found", raw)
    if source_reader == "medivlad":
        records = records_medivlad(raw, skip)
    elif source_reader == "videos":
        records = records_videos(raw, Path(labels) if labels else None, skip)
    else:
        records = records_pocus(raw, skip)

    clip_rows, labelled_rows, clip_frames, labelled_frames = [], [], [], []
    offset = 0
    for n, rec in enumerate(records):
        if progress:
            progress(n + 1, len(records))
        frames, src_fps, kind = None, None, "video"
        if rec.source is not None:
            try:
                frames, src_fps, kind = read_clip(Path(rec.source), size, fps)
            except ClipError as exc:
                skip(rec.source, str(exc))
                if not rec.labelled:
                    continue
        label = SCORE_TO_CLASS[rec.score] if rec.score >= 0 else -1
        clip_id = -1
        if frames is not None:
            clip_id = len(clip_rows)
            clip_rows.append(
                {
                    "clip": clip_id,
                    "name": rec.name,
                    "patient": rec.patient,
                    "score": rec.score,
                    "label": label,
                    "fold": rec.fold,
                    "kind": kind,
                    "n_frames": len(frames),
                    "offset": offset,
                    "fps": round(min(fps, src_fps), 4) if src_fps else "",
                    "source_fps": round(src_fps, 4) if src_fps else "",
                    "source": str(rec.source),
                }
            )
            clip_frames.append(frames)
            offset += len(frames)
        # labelled frames: the official PNGs, else evenly spaced frames of a labelled clip
        if rec.labelled:
            for frame_name, index, png in rec.labelled:
                frame_score = int(LABELLED_NAME.match(frame_name)["score"])
                try:
                    img = read_image(png, size)
                except ClipError as exc:
                    skip(png, str(exc))
                    continue
                labelled_rows.append(
                    {
                        "name": frame_name,
                        "clip": clip_id,
                        "patient": rec.patient,
                        "frame": index,
                        "score": frame_score,
                        "label": SCORE_TO_CLASS[frame_score],
                        "fold": rec.fold,
                    }
                )
                labelled_frames.append(img[None])
        elif rec.score >= 0 and frames is not None:
            picks = sorted(set(np.linspace(0, len(frames) - 1, min(frames_per_clip, len(frames))).round().astype(int)))
            for i in picks:
                labelled_rows.append(
                    {
                        "name": f"{rec.name}_index{i}_{rec.score}",
                        "clip": clip_id,
                        "patient": rec.patient,
                        "frame": int(i),
                        "score": rec.score,
                        "label": label,
                        "fold": rec.fold,
                    }
                )
                labelled_frames.append(frames[i][None])
    if not clip_rows and not labelled_rows:
        raise SkdError(f"no readable clip ({len(skipped)} skipped; see the reasons with --debug)", raw)

    with staged_dir(out) as tmp:
        _write_csv(tmp / "clips.csv", CLIP_FIELDS, clip_rows)
        _write_csv(tmp / "labelled.csv", LABELLED_FIELDS, labelled_rows)
        n_frames = _save_stack(tmp / "frames.npy", clip_frames, size)
        n_labelled = _save_stack(tmp / "labelled.npy", labelled_frames, size)
        with open(tmp / "skipped.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(s) + "\n" for s in skipped)
        counts = {}
        for level, rows in (("videos", [r for r in clip_rows if r["kind"] == "video"]), ("frames", labelled_rows)):
            counts[level] = {
                f"fold{f}": [sum(1 for r in rows if r["fold"] == f and r["label"] == c) for c in range(3)]
                for f in (1, 2)
            }
        info = {
            "task": "lus",
            "source": source,
            "raw": str(raw.resolve()),
            "size": size,
            "fps": fps,
            "clips": len(clip_rows),
            "frames": n_frames,
            "labelled_frames": n_labelled,
            "patients": len({r["patient"] for r in clip_rows} | {r["patient"] for r in labelled_rows}),
            "unlabelled_clips": sum(1 for r in clip_rows if r["score"] < 0),
            "class_counts": counts,
            "classes": ["score 0", "score 1-2", "score 3"],
            "skipped": len(skipped),
            "fingerprint": _fingerprint(tmp),
            "seconds": round(time.perf_counter() - t0, 2),
        }
        atomic_write_json(tmp / "prep.json", info)
    return {**info, "out": str(out), "skipped_list": str(out / "skipped.jsonl")}


# -- the prepared dataset ------------------------------------------------------------------------------------------
class PreparedLus:
    """Read-only view of a prepared directory (frames memory-mapped)."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder)
        if not (self.path / "prep.json").is_file():
            raise SkdError("not a prepared lus dataset (no prep.json; run `skd lus prep`)", self.path)
        self.info = read_json(self.path / "prep.json")
        self.size = int(self.info["size"])
        self.clips = self._read_csv("clips.csv")
        self.labelled = self._read_csv("labelled.csv")
        try:
            self.frames = np.load(self.path / "frames.npy", mmap_mode="r")
            self.labelled_frames = np.load(self.path / "labelled.npy", mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise SkdError(f"cannot read the prepared frames ({exc})", self.path) from exc
        if len(self.labelled_frames) != len(self.labelled) or (
            self.clips and len(self.frames) != self.clips[-1]["offset"] + self.clips[-1]["n_frames"]
        ):
            raise SkdError("frames.npy / labelled.npy do not match clips.csv / labelled.csv", self.path)

    @property
    def fingerprint(self) -> str:
        return str(self.info.get("fingerprint"))

    def _read_csv(self, name: str) -> list[dict]:
        path = self.path / name
        if not path.is_file():
            raise SkdError(f"missing {name}", self.path)
        ints = {"clip", "score", "label", "fold", "n_frames", "offset", "frame"}
        with open(path, encoding="utf-8", newline="") as fh:
            return [{k: (int(v) if k in ints else v) for k, v in row.items()} for row in csv.DictReader(fh)]

    def clip_frames(self, i: int) -> np.ndarray:
        c = self.clips[i]
        return self.frames[c["offset"] : c["offset"] + c["n_frames"]]

    def video_clips(self, fold: int) -> list[int]:
        """Labelled video clips of a fold file."""
        return [c["clip"] for c in self.clips if c["fold"] == fold and c["label"] >= 0 and c["kind"] == "video"]

    def labelled_of_fold(self, fold: int) -> list[int]:
        return [i for i, r in enumerate(self.labelled) if r["fold"] == fold]


def sample_frame_indices(
    n: int, length: int, random_offset: bool = False, rand: Callable[[int], int] | None = None
) -> np.ndarray:
    """``length`` frame indices of an ``n``-frame clip, as the official video pipeline samples them.

    Evaluation (and any clip with n <= length): pytorchvideo's uniform_temporal_subsample,
    floor(linspace(0, n - 1, length)), which repeats frames of a short clip. Training with
    ``random_offset``: a uniform stride n // length from a random offset (``rand(k)`` draws 0..k-1)."""
    if n < 1:
        raise ValueError("a clip needs at least one frame")
    if not random_offset or n <= length:
        return np.floor(np.linspace(0, n - 1, length)).astype(np.int64)
    stride = n // length
    span = stride * (length - 1) + 1
    start = rand(n - span + 1) if rand else 0
    return start + stride * np.arange(length, dtype=np.int64)
