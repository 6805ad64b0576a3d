"""The sar readers on generated files in the exact real layouts (FUSAR-Ship tree + meta.csv with
backslash paths; OpenSARShip Patch / Patch_Uint8 / Patch_Cal with VV/VH; ImageFolder), the documented
normalisation, splits, --shots, --label-noise, and every bad input the issue lists."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from skdcli.engine.errors import SkdError
from skdcli.sar.chips import NormSpec, normalise, read_chip, to_amplitude
from skdcli.sar.data import PreparedSar, PrepOptions, prepare_dataset
from skdcli.sar.synth import SHIP_CLASSES, write_fusar_like, write_imagefolder_like, write_opensarship_like


def small(**kw) -> PrepOptions:
    return PrepOptions(norm=NormSpec(size=16), **kw)


@pytest.fixture(scope="module")
def fusar_raw(tmp_path_factory) -> Path:
    # three dtypes in one tree (uint16, float32, uint8): every TIFF reader path
    return write_fusar_like(
        tmp_path_factory.mktemp("fusar") / "FUSAR-Ship1.0",
        per_class=6,
        size=24,
        classes=SHIP_CLASSES[:3],
        dtypes=("uint16", "float32", "uint8"),
    )


def test_fusar_layout_and_meta(fusar_raw: Path, tmp_path: Path) -> None:
    meta = (fusar_raw / "meta.csv").read_text().splitlines()
    assert meta[0] == "id,mmsi,length,width,polarMode,centerLookAngle,heightspace,widthspace,path"
    assert meta[1].endswith("Cargo\\BulkCarrier") and meta[1].startswith("Ship_C01S01N0001,")
    assert (fusar_raw / "Cargo" / "ContainerShip" / "Ship_C01S02N0003.tiff").is_file()
    dtypes = {str(tifffile.imread(p).dtype) for p in fusar_raw.rglob("*.tiff")}
    assert dtypes == {"uint16", "float32", "uint8"}
    out = tmp_path / "prep"
    result = prepare_dataset("fusar", fusar_raw, out, small(split="0.5,0.2,0.3"))
    assert result["chips"] == 18 and result["classes"] == ["BulkCarrier", "ContainerShip", "GeneralCargo"]
    assert result["split_counts"]["train"] == {"BulkCarrier": 3, "ContainerShip": 3, "GeneralCargo": 3}
    data = PreparedSar(out)
    assert data.x.shape == (18, 1, 16, 16) and data.x.min() >= 0 and data.x.max() <= 1
    row = data.index_rows()[0]
    assert row["meta"]["polarMode"] == "DH" and "length" in row["meta"]
    with pytest.raises(SkdError, match="at least 2 classes"):  # all three subcategories are Cargo
        prepare_dataset("fusar", fusar_raw, tmp_path / "cat", small(label_level="category"))


def test_fusar_row_without_file_and_file_without_row_are_skipped_and_listed(fusar_raw: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(fusar_raw, raw)
    (raw / "Cargo" / "BulkCarrier" / "Ship_C01S01N0002.tiff").unlink()  # a row without its file
    extra = raw / "Cargo" / "BulkCarrier" / "Ship_C01S01N0099.tiff"  # a file without a row
    shutil.copy(raw / "Cargo" / "BulkCarrier" / "Ship_C01S01N0001.tiff", extra)
    (raw / "Cargo" / "BulkCarrier" / "Ship_C01S01N0003.tiff").write_bytes(b"II*\x00 not really a tiff")  # corrupt
    out = tmp_path / "prep"
    result = prepare_dataset("fusar", raw, out, small())
    assert result["chips"] == 16 and result["skipped"] == 3
    skipped = {r["id"]: r["reason"] for r in map(json.loads, (out / "skipped.jsonl").read_text().splitlines())}
    assert skipped["Ship_C01S01N0002"] == "meta.csv row has no chip file"
    assert skipped["Ship_C01S01N0099"] == "chip has no meta.csv row"
    assert skipped["Ship_C01S01N0003"].startswith("unreadable chip")


def test_fusar_without_meta_csv_is_one_line_error(fusar_raw: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(fusar_raw, raw)
    (raw / "meta.csv").unlink()
    with pytest.raises(SkdError, match="no meta.csv"):
        prepare_dataset("fusar", raw, tmp_path / "p", small())


def test_opensarship_variants_and_polarisations(tmp_path: Path) -> None:
    raw = write_opensarship_like(tmp_path / "OpenSARShip", per_class=4, size=20)
    names = sorted(p.name for p in (raw / "S1A_IW_GRDH_scene00" / "Patch_Uint8").iterdir())
    assert names[0] == "BulkCarrier_scene00_0000_vh.tif" and names[1].endswith("_vv.tif")
    vv = prepare_dataset("opensarship", raw, tmp_path / "vv", small(variant="patch_uint8", pol="vv"))
    assert vv["chips"] == 12 and vv["channels"] == 1
    assert vv["classes"] == ["BulkCarrier", "ContainerShip", "Tanker"]
    both = prepare_dataset("opensarship", raw, tmp_path / "both", small(variant="patch_cal", pol="vv+vh"))
    assert both["channels"] == 2
    x = PreparedSar(tmp_path / "both").x
    assert not np.allclose(x[:, 0], x[:, 1])
    # a VH chip whose VV partner is missing is skipped with the reason
    (raw / "S1A_IW_GRDH_scene00" / "Patch" / "Tanker_scene00_0000_vv.tif").unlink()
    part = prepare_dataset("opensarship", raw, tmp_path / "part", small(variant="patch", pol="vv+vh"))
    reasons = [json.loads(r)["reason"] for r in (tmp_path / "part" / "skipped.jsonl").read_text().splitlines()]
    assert part["chips"] == 11 and "no VV chip beside it" in reasons
    with pytest.raises(SkdError, match="--variant"):
        prepare_dataset("opensarship", raw, tmp_path / "rgb", small(variant="patch_rgb"))
    for d in raw.glob("*/Patch_Cal"):
        shutil.rmtree(d)
    with pytest.raises(SkdError, match="no Patch_Cal/ folder"):
        prepare_dataset("opensarship", raw, tmp_path / "cal", small(variant="patch_cal"))


def test_imagefolder_grayscale_rgb_mix(tmp_path: Path) -> None:
    from PIL import Image

    raw = write_imagefolder_like(tmp_path / "folder", per_class=4, size=20)
    gray = np.asarray(Image.open(raw / "BulkCarrier" / "0000.png"))
    Image.fromarray(np.stack([gray] * 3, -1)).save(raw / "BulkCarrier" / "0000.png")  # now RGB
    (raw / "BulkCarrier" / "notes.txt").write_text("not a chip")
    result = prepare_dataset("imagefolder", raw, tmp_path / "p", small())
    info = json.loads((tmp_path / "p" / "prep.json").read_text())
    assert result["chips"] == 12 and info["rgb_converted"] == [str(raw / "BulkCarrier" / "0000.png")]
    rgb = PreparedSar(tmp_path / "p").x[0, 0]
    ref = normalise(to_amplitude(gray), NormSpec(size=16))
    assert np.allclose(rgb, ref, atol=1e-6)  # RGB with equal channels = the grayscale chip


def test_normalisation_db_and_percentiles_by_hand() -> None:
    a = np.array([[1.0, 10.0], [100.0, 1000.0]])
    chip = to_amplitude(a.astype(np.float32))
    x = normalise(chip, NormSpec(scale="db", p_lo=0, p_hi=100, size=2))
    # 20 log10 a = 0, 20, 40, 60 dB -> (x - 0) / 60
    assert np.allclose(x, [[0, 1 / 3], [2 / 3, 1]], atol=1e-5)
    lin = normalise(to_amplitude(np.array([[0, 50], [100, 200]], dtype=np.uint8)), NormSpec(p_lo=0, p_hi=100, size=2))
    assert np.allclose(lin, [[0, 0.25], [0.5, 1.0]], atol=1e-6)  # auto: uint8 stays linear
    cplx = to_amplitude(np.array([[3 + 4j, 0], [0, 0]], dtype=np.complex64))
    assert cplx.was_complex and cplx.amplitude[0, 0] == pytest.approx(5.0)


def test_corrupt_tiff_alone_is_a_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.tiff"
    bad.write_bytes(b"garbage")
    with pytest.raises(SkdError) as err:
        read_chip(bad)
    assert str(bad) in str(err.value) and "unreadable chip" in str(err.value)


def test_split_is_stable_and_split_file(fusar_raw: Path, tmp_path: Path) -> None:
    a = prepare_dataset("fusar", fusar_raw, tmp_path / "a", small(seed=4))
    b = prepare_dataset("fusar", fusar_raw, tmp_path / "b", small(seed=4))
    assert np.array_equal(np.load(tmp_path / "a" / "split.npy"), np.load(tmp_path / "b" / "split.npy"))
    assert a["split_counts"] == b["split_counts"]
    rows = PreparedSar(tmp_path / "a").index_rows()
    split_file = tmp_path / "split.csv"
    split_file.write_text(
        "id,split\n" + "".join(f"{r['id']},{'train' if i % 3 else 'test'}\n" for i, r in enumerate(rows[:-1]))
    )
    c = prepare_dataset("fusar", fusar_raw, tmp_path / "c", small(split=str(split_file)))
    assert c["chips"] == 17 and c["skipped"] == 1
    assert json.loads((tmp_path / "c" / "prep.json").read_text())["split"]["file"] == str(split_file.resolve())


def test_shots_and_a_class_left_without_training_chips(fusar_raw: Path, tmp_path: Path) -> None:
    five = prepare_dataset("fusar", fusar_raw, tmp_path / "k2", small(shots=2))
    assert set(five["split_counts"]["train"].values()) == {2} and five["shots"] == 2
    rows = PreparedSar(tmp_path / "k2").index_rows()
    split_file = tmp_path / "split.csv"  # every GeneralCargo chip in test
    split_file.write_text(
        "".join(
            f"{r['id']},{'test' if r['class'] == 'GeneralCargo' else 'train'}\n"
            for r in PreparedSar(tmp_path / "k2").index_rows()
        )
    )
    split_file.write_text(
        "".join(f"{p.stem},{'test' if 'S03' in p.stem else 'train'}\n" for p in sorted(fusar_raw.rglob("*.tiff")))
    )
    with pytest.raises(SkdError, match=r"\['GeneralCargo'\] have 0 training chips after --shots 2"):
        prepare_dataset("fusar", fusar_raw, tmp_path / "zero", small(split=str(split_file), shots=2))
    assert rows  # the first prep is untouched by the failed one
    assert not (tmp_path / "zero").exists()


def test_label_noise_is_recorded_and_only_on_train(fusar_raw: Path, tmp_path: Path) -> None:
    result = prepare_dataset("fusar", fusar_raw, tmp_path / "n", small(label_noise=0.5, split="0.5,0.25,0.25", seed=1))
    data = PreparedSar(tmp_path / "n")
    flipped = data.labels != data.clean_labels
    assert result["label_noise"]["flipped"] == int(flipped.sum()) > 0
    assert (data.split[flipped] == 0).all()  # val / test labels stay clean
    info = json.loads((tmp_path / "n" / "prep.json").read_text())
    assert info["label_noise"]["rate"] == 0.5 and len(info["label_noise"]["flipped_ids"]) == int(flipped.sum())
    noisy_rows = [r for r in data.index_rows() if r["noisy"]]
    assert all(r["label"] != r["class"] for r in noisy_rows)


def test_prep_refuses_to_overwrite_and_bad_options(fusar_raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    prepare_dataset("fusar", fusar_raw, out, small())
    with pytest.raises(SkdError, match="--overwrite"):
        prepare_dataset("fusar", fusar_raw, out, small())
    prepare_dataset("fusar", fusar_raw, out, small(seed=2), overwrite=True)
    assert json.loads((out / "prep.json").read_text())["split"]["seed"] == 2
    with pytest.raises(SkdError, match="--classes"):
        prepare_dataset("fusar", fusar_raw, tmp_path / "c", small(classes="BulkCarrier,Submarine"))
    with pytest.raises(SkdError, match="--label-noise"):
        prepare_dataset("fusar", fusar_raw, tmp_path / "d", small(label_noise=1.5))
    with pytest.raises(SkdError, match="--split"):
        prepare_dataset("fusar", fusar_raw, tmp_path / "e", small(split="0.5,0.9"))
    with pytest.raises(SkdError, match="--source"):
        prepare_dataset("sentinel", fusar_raw, tmp_path / "f", small())
