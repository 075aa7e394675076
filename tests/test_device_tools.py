"""The GPU run's preparation, on the CPU: a trimmed wheel whose RECORD pip accepts, and the per-
trial report of a device sweep (tools/device_bundle.py, benchmarks/device_report.py). The
bundle's install in Python 3.12 and the rehearsal run are scripts (tools/check_device_bundle.sh,
benchmarks/device_run.sh --cpu-rehearsal): they need a 3.12 with torch, which CI has not."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "benchmarks"))

import device_bundle  # noqa: E402
import device_report  # noqa: E402


def test_a_trimmed_wheel_keeps_the_rest_and_records_each_kept_file(tmp_path: Path) -> None:
    files = {"ray/__init__.py": b"x = 1\n", "ray/tune/__init__.py": b"tune\n",
             "ray/rllib/big.py": b"0" * 1000, "ray/jars/a.jar": b"jar",
             "ray-2.60.0.dist-info/METADATA": b"Name: ray\n"}
    source = tmp_path / "ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl"
    with zipfile.ZipFile(source, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
        wheel.writestr("ray-2.60.0.dist-info/RECORD", "".join(f"{n},,\n" for n in files))
    target = tmp_path / "trimmed" / source.name
    target.parent.mkdir()
    removed = device_bundle.trim_wheel(source, target, ("ray/jars/", "ray/rllib/"))
    assert removed == 2
    with zipfile.ZipFile(target) as wheel:
        names = set(wheel.namelist())
        record = list(csv.reader(io.StringIO(wheel.read("ray-2.60.0.dist-info/RECORD").decode())))
    kept = {"ray/__init__.py", "ray/tune/__init__.py", "ray-2.60.0.dist-info/METADATA"}
    assert names == kept | {"ray-2.60.0.dist-info/RECORD"}
    # Every kept file with its sha256 (urlsafe base64, unpadded: the wheel spec) and size.
    for path, digest, size in record:
        if path.endswith("RECORD"):
            assert (digest, size) == ("", "")
            continue
        expected = base64.urlsafe_b64encode(hashlib.sha256(files[path]).digest()).rstrip(b"=")
        assert (digest, int(size)) == (f"sha256={expected.decode()}", len(files[path]))
    assert {row[0] for row in record} == names


def write_rows(trial_dir: Path, rows: list[dict]) -> None:
    trial_dir.mkdir(parents=True)
    (trial_dir / "params.json").write_text("{}")
    (trial_dir / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_the_device_report_adds_up_each_trials_images(tmp_path: Path) -> None:
    # Trial a: two epochs of 100 images/s x 2 s, ending at t=102 and t=104; trial b: one epoch
    # of 300 images/s x 1 s ending at t=103. Span: 100 (a's first start) to 104: 700 images.
    write_rows(tmp_path / "a", [
        {"row_type": "epoch", "images_per_s": 100.0, "epoch_time_s": 2.0, "timestamp": 102},
        {"row_type": "epoch", "images_per_s": 100.0, "epoch_time_s": 2.0, "timestamp": 104},
        {"row_type": "round", "round": 0, "test_acc": 0.5, "sparsity": 0.0, "gpu_ids": ["0"],
         "cuda_visible_devices": "0", "gpu_memory_peak_mib": 812.5}])
    write_rows(tmp_path / "b", [
        {"row_type": "epoch", "images_per_s": 300.0, "epoch_time_s": 1.0, "timestamp": 103}])
    result = device_report.report(tmp_path)
    assert result["total"] == {"trials": 2, "trials_that_trained": 2, "images": 700,
                               "span_s": 4, "images_per_s": 175.0}
    a, b = result["trials"]
    assert (a["gpu_ids"], a["cuda_visible_devices"], a["gpu_memory_peak_mib"]) == (
        ["0"], "0", 812.5)
    assert (a["epochs"], a["rounds"], a["images_per_s"]) == (2, 1, 100.0)
    assert (b["rounds"], b["gpu_memory_peak_mib"]) == (0, None)


def test_the_bundle_pins_what_is_installed_here() -> None:
    import importlib.metadata

    pins = device_bundle.pinned()
    assert f"ray=={importlib.metadata.version('ray')}" in pins
    assert f"torch-pruning=={importlib.metadata.version('torch-pruning')}" in pins
    assert not [p for p in pins if p.split("==")[0] in ("torch", "torchvision")]  # the image's


@pytest.mark.parametrize("script", ["benchmarks/device_run.sh", "tools/check_device_bundle.sh"])
def test_the_device_scripts_are_executable(script: str) -> None:
    path = REPO / script
    assert path.read_text().startswith("#!/usr/bin/env bash\n")
    assert path.stat().st_mode & 0o111
