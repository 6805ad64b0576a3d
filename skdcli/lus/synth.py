"""Synthetic B-mode lung-ultrasound clips, written in the official MeDiVLAD on-disk layout.

The tiny default needs data with the structure of the real task and no licence: every clip shows
a chest wall, a bright pleural line and, below it, what the LUS score is about:

    score 0   A-lines: horizontal reverberations of the pleural line at multiples of its depth
    score 1   a few B-lines: vertical comet tails from the pleural line to the bottom, A-lines fading
    score 2   many B-lines, some confluent (wide bright bands), irregular pleural line
    score 3   a subpleural consolidation: a tissue-like (hepatised) region with bright air bronchograms

with probe motion (the whole image drifts), lung sliding (texture below the pleura slides sideways),
B-lines and consolidations that come and go between frames (so some frames of a sick clip look
healthy: the reason video-level aggregation matters), multiplicative speckle, depth attenuation,
gain, convex (fan) or linear probes and rib shadows. Scores map to 3 classes as in the official
code (0 -> 0, 1 and 2 -> 1, 3 -> 2).

Layout written (recipes/lus/README.md, "On-disk formats"):

    ROOT/data/15_frames_processed/{video}.npy        uint8 (frames, 1, H, W)
    ROOT/data/labeled_frames/{video}_index{i}_{score}.png
    ROOT/data/2_fold_validation/train{1,2}.csv, validation{1,2}.csv   (frame names, no header)
    ROOT/data/video_list.csv                         (video names, no header)

Video names follow the official pattern {patientId}_s{k}_{source}_{probe}_{score}.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from ..engine.io import atomic_write_text


def _smooth(x: np.ndarray, passes: int = 1) -> np.ndarray:
    """A cheap 3x3 box blur (edge-padded), to give speckle a grain larger than one pixel."""
    for _ in range(passes):
        p = np.pad(x, 1, mode="edge")
        x = (
            p[:-2, :-2]
            + p[:-2, 1:-1]
            + p[:-2, 2:]
            + p[1:-1, :-2]
            + p[1:-1, 1:-1]
            + p[1:-1, 2:]
            + p[2:, :-2]
            + p[2:, 1:-1]
            + p[2:, 2:]
        ) / 9.0
    return x


class ClipSpec:
    """Everything about one clip that stays fixed over its frames."""

    def __init__(self, score: int, size: int, rng: np.random.Generator):
        s = size
        self.score, self.size = score, s
        self.convex = bool(rng.random() < 0.5)  # fan-shaped field of view (only the top corners are cut)
        self.pleura_y = rng.uniform(0.24, 0.36) * s
        self.gain = rng.uniform(0.85, 1.1)
        self.attenuation = rng.uniform(0.6, 1.0)
        self.noise = rng.uniform(0.3, 0.5)
        self.wall_bands = rng.uniform(0.2, 0.45, size=3)
        self.rib_x = rng.uniform(0.05, 0.95) * s if rng.random() < 0.25 else None
        self.rib_w = rng.uniform(0.05, 0.1) * s
        # B-lines: (x position, width, intensity, visibility probability per frame)
        n_b = {
            0: int(rng.random() < 0.15),
            1: int(rng.integers(1, 3)),
            2: int(rng.integers(3, 6)),
            3: int(rng.integers(0, 3)),
        }[score]
        self.blines = [
            (
                rng.uniform(0.15, 0.85) * s,
                (rng.uniform(0.7, 1.1) if score < 2 else rng.uniform(1.0, 2.6)) * s / 32,
                rng.uniform(0.3, 0.5) if score == 0 else rng.uniform(0.65, 0.95),
                rng.uniform(0.6, 0.95),
            )
            for _ in range(n_b)
        ]
        self.alines = {
            0: rng.uniform(0.4, 0.6),
            1: rng.uniform(0.1, 0.25),
            2: rng.uniform(0.0, 0.1),
            3: rng.uniform(0.0, 0.1),
        }[score]
        self.irregular = {0: 0.0, 1: 0.4, 2: 1.0, 3: 1.2}[score] * rng.uniform(0.6, 1.2)
        # consolidation: centre x, half-width, depth below the pleura, visibility probability
        self.consolidation = (
            (rng.uniform(0.3, 0.7) * s, rng.uniform(0.2, 0.35) * s, rng.uniform(0.3, 0.5) * s, rng.uniform(0.7, 0.95))
            if score == 3
            else None
        )
        self.bronchograms = rng.uniform(0, 1, size=(int(rng.integers(2, 6)), 2))
        self.slide_speed = rng.uniform(0.3, 1.2) * rng.choice([-1, 1])
        self.phase = rng.uniform(0, 2 * np.pi)


def render_frame(spec: ClipSpec, t: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """One frame (float32 in [0, 1], shape (size, size)) and whether the score's finding is visible."""
    s = spec.size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    breath = np.sin(spec.phase + 2 * np.pi * t / 12.0)
    dx, dy = 1.2 * breath + rng.normal(0, 0.4), 0.6 * np.cos(spec.phase + 2 * np.pi * t / 12.0)
    x, y = xx - dx, yy - dy
    py = spec.pleura_y + 0.8 * np.sin(x / s * 7 + spec.phase) * spec.irregular / 2
    img = np.zeros((s, s), np.float32)
    # chest wall: soft-tissue layers above the pleura
    wall = y < py
    for k, level in enumerate(spec.wall_bands):
        band = np.exp(-((y - (k + 0.6) * spec.pleura_y / 3.5) ** 2) / (2 * (0.05 * s) ** 2))
        img += wall * band * level
    img += wall * 0.18
    # pleural line (thicker and broken as the score rises)
    thick = 0.9 + 0.5 * spec.irregular
    line = np.exp(-((y - py) ** 2) / (2 * thick**2))
    if spec.irregular > 0.5:
        gaps = np.sin(x / s * 23 + spec.phase * 3) > 0.75 - 0.2 * spec.irregular
        line = line * np.where(gaps, 0.35, 1.0)
    img += 0.95 * line
    lung = y > py + 1.5
    # lung: dark air with a sliding texture
    slide = np.sin((x + spec.slide_speed * t * 2) / s * 31 + y / s * 5) * 0.04 + 0.1
    img += lung * slide
    # A-lines at multiples of the pleural depth
    for m in (2, 3, 4):
        img += lung * spec.alines * (0.8 ** (m - 2)) * np.exp(-((y - m * py) ** 2) / (2 * (thick * 1.1) ** 2))
    finding = spec.score == 0
    drift = spec.slide_speed * t * 0.6
    for bx, bw, level, p_visible in spec.blines:
        if rng.random() > p_visible:
            continue
        finding = finding or spec.score in (1, 2)
        col = np.exp(-((x - bx - drift) ** 2) / (2 * bw**2))
        img = np.maximum(img, lung * col * level * (0.75 + 0.25 * np.exp(-(y - py) / s)))
    if spec.consolidation is not None:
        cx, hw, depth, p_visible = spec.consolidation
        if rng.random() < p_visible:
            finding = True
            edge = depth * (1 + 0.25 * np.sin(x / s * 17 + spec.phase))
            region = lung & (np.abs(x - cx - drift) < hw) & (y < py + edge)
            tissue = 0.42 + 0.08 * np.sin(x / 2.3 + y / 1.7)
            img = np.where(region, tissue, img)
            for bxf, byf in spec.bronchograms:
                bx_, by_ = cx - hw + 2 * hw * bxf + drift, py + 2 + (edge.mean() - 3) * byf
                img += region * 0.5 * np.exp(-((x - bx_) ** 2 + (y - by_) ** 2) / 1.2)
    # rib: bright cap in the wall, acoustic shadow below
    if spec.rib_x is not None:
        shadow = np.abs(x - spec.rib_x) < spec.rib_w
        img = np.where(shadow & (y > py * 0.55), img * 0.15, img)
    # depth attenuation, gain, multiplicative speckle
    img *= np.exp(-spec.attenuation * y / s * 0.8) * spec.gain
    speckle = _smooth(rng.rayleigh(1.0, size=(s, s)).astype(np.float32), 1) / 1.25
    img = img * (1 - spec.noise + spec.noise * speckle) + 0.02 * rng.random((s, s))
    if spec.convex:  # fan-shaped field of view from an apex above the image
        apex_y = -0.15 * s
        angle = np.arctan2(xx - s / 2, yy - apex_y)
        radius = np.hypot(xx - s / 2, yy - apex_y)
        img *= (np.abs(angle) < 0.75) & (radius > 0.2 * s)
    return np.clip(img, 0, 1).astype(np.float32), bool(finding)


def render_clip(score: int, n_frames: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, list[bool], str]:
    """(frames (n, size, size) float32 in [0, 1], finding visible per frame, probe kind)."""
    spec = ClipSpec(score, size, rng)
    frames, visible = zip(*(render_frame(spec, t, rng) for t in range(n_frames)))
    return np.stack(frames), list(visible), "convex" if spec.convex else "linear"


def write_medivlad_like(
    root: str | Path,
    patients: int = 36,
    clips_per_patient: int = 2,
    size: int = 32,
    frames: tuple[int, int] = (10, 20),
    labelled_per_clip: int = 3,
    seed: int = 0,
) -> Path:
    """Write a synthetic dataset in the official MeDiVLAD layout under ROOT/data; returns ROOT.

    Patients alternate between the two fold files (patient-disjoint, as the official CSVs), each
    patient has a severity tendency, each of its clips a score near it. Labelled frames are taken
    among the frames where the clip's finding is visible (as a clinician would pick them).
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    data = root / "data"
    clips_dir, frames_dir, folds_dir = data / "15_frames_processed", data / "labeled_frames", data / "2_fold_validation"
    for d in (clips_dir, frames_dir, folds_dir):
        d.mkdir(parents=True, exist_ok=True)
    fold_frames: dict[int, list[str]] = {1: [], 2: []}
    videos: list[str] = []
    # patients balanced over severities and folds: tendency cycles 0..3, folds alternate within each pair
    for p in range(patients):
        tendency = p % 4
        fold = 1 + (p // 4 + p) % 2
        for k in range(clips_per_patient):
            score = int(np.clip(tendency + rng.choice([-1, 0, 0, 0, 1]), 0, 3))
            n = int(rng.integers(frames[0], frames[1] + 1))
            clip, visible, probe = render_clip(score, n, size, rng)
            name = f"{p + 1}_s{k}_Synthetic_{probe}_{score}"
            videos.append(name)
            arr = (clip * 255).round().astype(np.uint8)[:, None]
            np.save(clips_dir / f"{name}.npy", arr, allow_pickle=False)
            candidates = [i for i, v in enumerate(visible) if v] or list(range(n))
            chosen = sorted(
                rng.choice(candidates, size=min(labelled_per_clip, len(candidates)), replace=False).tolist()
            )
            for i in chosen:
                frame_name = f"{name}_index{i}_{score}"
                Image.fromarray(arr[i, 0]).save(frames_dir / f"{frame_name}.png")
                fold_frames[fold].append(frame_name)
    lines = {f: "".join(f"{n}\n" for n in fold_frames[f]) for f in (1, 2)}
    atomic_write_text(folds_dir / "train1.csv", lines[1])
    atomic_write_text(folds_dir / "validation1.csv", lines[2])  # validation1 = train2, as in the official CSVs
    atomic_write_text(folds_dir / "train2.csv", lines[2])
    atomic_write_text(folds_dir / "validation2.csv", lines[1])
    atomic_write_text(data / "video_list.csv", "".join(f"{v}\n" for v in videos))
    return root


def write_video_folder(
    out: str | Path, clips: list[tuple[str, int, int]], size: int = 64, fps: int = 15, seed: int = 0
) -> Path:
    """A plain folder of synthetic clips + labels.csv (file,label,patient) for `prep --source videos`.

    ``clips``: (file name with extension .mp4 / .avi / .gif / .mov, LUS score, patient id). Encoded with
    PyAV (H.264 in mp4/mov, MPEG-4 part 2 in avi) or Pillow (gif)."""
    import av

    rng = np.random.default_rng(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, score, patient in clips:
        frames, _, _ = render_clip(score, int(rng.integers(16, 24)), size, rng)
        u8 = (frames * 255).round().astype(np.uint8)
        path = out / name
        if path.suffix == ".gif":
            imgs = [Image.fromarray(f) for f in u8]
            imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0)
        else:
            codec = "mpeg4" if path.suffix == ".avi" else "libx264"
            with av.open(str(path), "w") as container:
                stream = container.add_stream(codec, rate=fps)
                stream.width = stream.height = size
                stream.pix_fmt = "yuv420p"
                for f in u8:
                    frame = av.VideoFrame.from_ndarray(np.repeat(f[:, :, None], 3, axis=2), format="rgb24")
                    for packet in stream.encode(frame):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
        rows.append({"file": name, "label": score, "patient": patient})
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "label", "patient"])
        writer.writeheader()
        writer.writerows(rows)
    return out
