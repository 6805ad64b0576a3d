"""lus readers on the real POCUS clips (tests/fixtures/lus, CC BY) and on generated data in the real formats,
and the bad-input cases of issue 11."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from skdcli.engine.errors import SkdError
from skdcli.lus.data import (
    PreparedLus,
    assign_folds,
    decode_video,
    prepare_dataset,
    read_npy_clip,
    sample_frame_indices,
)
from skdcli.lus.synth import write_medivlad_like, write_video_folder

FIXTURES = Path(__file__).parent / "fixtures" / "lus"
MP4 = FIXTURES / "pocus" / "data" / "pocus_videos" / "linear" / "Pneu_prospective_file3.mp4"
MOV = FIXTURES / "pocus" / "data" / "pocus_videos" / "convex" / "Reg_recommendations_alines_mov1.mov"
MPEG = FIXTURES / "mpeg" / "Reg_pat1Image_132943.mpeg"


def pyav_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.mark.parametrize("path, frames, fps", [(MP4, 151, 25.0), (MOV, 180, 18.0), (MPEG, 280, 25.0)])
def test_decode_real_clips(path: Path, frames: int, fps: float):
    assert pyav_frames(path) == frames  # the counts the shared sample's labels.csv records
    out, src_fps, decoded = decode_video(path, 32, 15.0)
    assert decoded == frames and src_fps == pytest.approx(fps, rel=1e-3)
    assert out.dtype == np.uint8 and out.shape[1:] == (32, 32)
    duration = frames / fps
    assert abs(len(out) - duration * 15.0) <= 1.5  # resampled to 15 fps: one frame per 1/15 s bin
    assert out.std() > 5  # real image content, not a blank decode
    slow, _, _ = decode_video(path, 32, 60.0)  # a target above the source rate keeps every frame once
    assert len(slow) == frames


def test_prep_pocus_metadata(tmp_path: Path):
    result = prepare_dataset("pocus", FIXTURES / "pocus", tmp_path / "p", size=32, frames_per_clip=3)
    data = PreparedLus(tmp_path / "p")
    by_name = {c["name"]: c for c in data.clips}
    assert by_name["Pneu_prospective_file3"]["score"] == 1 and by_name["Pneu_prospective_file3"]["label"] == 1
    assert by_name["Reg_recommendations_alines_mov1"]["score"] == 0
    assert by_name["Pneu_prospective_file3"]["patient"] == "pocus117"
    assert result["skipped"] == 1  # Vir_prospective_file1: listed in the metadata, not in this copy
    skipped = [json.loads(line) for line in (tmp_path / "p" / "skipped.jsonl").read_text().splitlines()]
    assert "Vir_prospective_file1" in skipped[0]["reason"]
    assert len(data.labelled) == 6 and {c["fold"] for c in data.clips} == {1, 2}  # 2 patients -> one per fold


def test_prep_videos_folder_with_real_and_generated_formats(tmp_path: Path):
    raw = tmp_path / "raw"
    write_video_folder(raw, [("a.avi", 0, "p1"), ("b.gif", 3, "p2"), ("c.mp4", 2, "p3")], size=40, seed=1)
    for real in (MP4, MPEG):
        (raw / real.name).write_bytes(real.read_bytes())
    frames_dir = raw / "frames_clip"
    frames_dir.mkdir()
    for i in range(5):
        Image.fromarray(np.full((20, 20), 40 * i, np.uint8)).save(frames_dir / f"{i}.png")
    with open(raw / "labels.csv", "a", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([MP4.name, 1, "p4"])
        writer.writerow([MPEG.name, 0, "p4"])
        writer.writerow(["frames_clip", 3, "p5"])
    info = prepare_dataset("videos", raw, tmp_path / "p", size=24, fps=10.0)
    data = PreparedLus(tmp_path / "p")
    names = {c["name"]: c for c in data.clips}
    assert set(names) == {"a", "b", "c", MP4.stem, MPEG.stem, "frames_clip"}
    assert names["frames_clip"]["n_frames"] == 5 and names["b"]["label"] == 2
    assert data.frames.shape[1:] == (24, 24) and info["clips"] == 6
    # folds are patient-disjoint: both clips of p4 share a fold
    assert names[MP4.stem]["fold"] == names[MPEG.stem]["fold"]
    patients = {}
    for c in data.clips:
        assert patients.setdefault(c["patient"], c["fold"]) == c["fold"]
    # refusing to overwrite, then replacing with --overwrite
    with pytest.raises(SkdError, match="overwrite"):
        prepare_dataset("videos", raw, tmp_path / "p", size=24)
    prepare_dataset("videos", raw, tmp_path / "p", size=24, overwrite=True)


def test_bad_inputs(tmp_path: Path):
    raw = tmp_path / "raw"
    write_video_folder(raw, [("good.mp4", 1, "p1"), ("other.mp4", 0, "p2")], size=32, seed=2)
    (raw / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 10)
    with av.open(str(raw / "empty.avi"), "w") as c:  # a valid container (header, index) with no frame
        s = c.add_stream("mpeg4", rate=15)
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        c.start_encoding()
    info = prepare_dataset("videos", raw, tmp_path / "p", size=32)
    reasons = {
        Path(s["file"]).name: s["reason"]
        for s in map(json.loads, (tmp_path / "p" / "skipped.jsonl").read_text().splitlines())
    }
    assert set(reasons) == {"corrupt.mp4", "empty.avi"} and info["clips"] == 2
    assert reasons["empty.avi"] == "no frames" and reasons["corrupt.mp4"].startswith("cannot decode")

    (raw / "labels.csv").write_text("file,label,patient\ngood.mp4,1,p1\nmissing.mp4,2,p3\n")
    with pytest.raises(SkdError, match=r"labels.csv: line 3 names 'missing.mp4', which does not exist"):
        prepare_dataset("videos", raw, tmp_path / "q", size=32)
    (raw / "labels.csv").write_text("file,label\ngood.mp4,5\n")
    with pytest.raises(SkdError, match=r"line 2: label '5' is not a LUS score 0-3"):
        prepare_dataset("videos", raw, tmp_path / "q", size=32)
    (raw / "labels.csv").write_text("name,score\n")
    with pytest.raises(SkdError, match="needs the columns file,label"):
        prepare_dataset("videos", raw, tmp_path / "q", size=32)

    # MeDiVLAD layout: a zero-frame .npy clip is skipped; a labelled frame with score 7 is an error
    root = write_medivlad_like(tmp_path / "mv", patients=4, clips_per_patient=1, size=16, frames=(4, 6))
    np.save(root / "data" / "15_frames_processed" / "9_s0_Synthetic_linear_2.npy", np.zeros((0, 1, 16, 16), np.uint8))
    (root / "data" / "video_list.csv").unlink()
    info = prepare_dataset("medivlad", root, tmp_path / "m", size=16)
    assert info["skipped"] == 1
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "data" / "labeled_frames" / "1_s0_X_1_index0_7.png")
    with pytest.raises(SkdError, match="label '7' is not a LUS score"):
        prepare_dataset("medivlad", root, tmp_path / "m2", size=16)


def test_medivlad_layout_and_folds(tmp_path: Path):
    root = write_medivlad_like(
        tmp_path / "mv", patients=8, clips_per_patient=2, size=16, frames=(5, 9), labelled_per_clip=2, seed=3
    )
    info = prepare_dataset("medivlad", root, tmp_path / "p", size=16)
    data = PreparedLus(tmp_path / "p")
    assert info["clips"] == 16 and len(data.labelled) == 32
    # fold of each labelled frame = the fold file that lists it; validation1 = train2 (official CSVs)
    folds = root / "data" / "2_fold_validation"
    train1 = set((folds / "train1.csv").read_text().split())
    assert train1 == set((folds / "validation2.csv").read_text().split())
    for r in data.labelled:
        assert (r["name"] in train1) == (r["fold"] == 1)
        assert r["label"] == [0, 1, 1, 2][int(r["name"].rsplit("_", 1)[1])]
    assert not {c["patient"] for c in data.clips if c["fold"] == 1} & {
        c["patient"] for c in data.clips if c["fold"] == 2
    }
    # clip frames equal the .npy content (already at the target size)
    first = data.clips[0]
    raw = np.load(root / "data" / "15_frames_processed" / f"{first['name']}.npy")
    assert np.array_equal(data.clip_frames(0), raw[:, 0])


def test_npy_float_and_short_clip_sampling(tmp_path: Path):
    clip = np.random.default_rng(0).random((6, 1, 20, 20)).astype(np.float32)  # floats in [0, 1]
    np.save(tmp_path / "c.npy", clip)
    frames = read_npy_clip(tmp_path / "c.npy", 20)
    assert np.array_equal(frames, (clip[:, 0] * 255).round().astype(np.uint8))
    # a clip shorter than 15 frames is sampled with repeats, as the official uniform_temporal_subsample
    idx = sample_frame_indices(len(frames), 15)
    assert len(idx) == 15 and idx.min() == 0 and idx.max() == 5 and len(set(idx.tolist())) == 6


def test_assign_folds_balances_and_is_disjoint():
    patients = {f"p{i}": [i % 3] * (1 + i % 2) for i in range(12)}
    folds = assign_folds(patients, seed=0)
    per_fold = {
        f: np.bincount([lab for p, labs in patients.items() if folds[p] == f for lab in labs], minlength=3)
        for f in (1, 2)
    }
    assert np.abs(per_fold[1] - per_fold[2]).max() <= 2
    assert assign_folds(patients, seed=0) == folds  # deterministic
