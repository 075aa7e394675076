"""Build `.device/`, what a lent GPU machine needs to run prunetune, small enough to travel with
the repository in one run (64 MiB in all):

* `.device/wheels/`: the packages the GPU machine's image lacks, as cp312 manylinux wheels at
  the versions installed here (what the suite tested), Ray's trimmed of the parts prunetune
  never imports (`ray/jars`, `rllib`, `serve`, `llm`, ...) with its RECORD rewritten;
* `.device/data/flowers-102/`: Flowers-102 re-encoded at 64 px (shorter side), the official
  split files copied, from `../shared/data` (which does not travel);
* `.device/MANIFEST.json`: every file's size, the bundle's and the repository's.

    python tools/device_bundle.py [--data ../shared/data] [--size 64] [--quality 70]

Downloads go through pip (the package index); wheels already in `.device-cache/` (beside
the bundle, not in it) are reused. Carry `.device` to the GPU machine, nothing else. Fails,
with the sizes, when bundle and repository exceed the limit.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEVICE = REPO / ".device"
CACHE = REPO / ".device-cache"
LIMIT_BYTES = 64 * 2 ** 20
#: The device image's Python and the platforms pip may pick wheels for.
PIP_PLATFORM = ["--python-version", "3.12", "--implementation", "cp",
                "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                "--platform", "manylinux2014_x86_64"]
#: Distributions the GPU image lacks (its image has torch, torchvision, pandas, pyarrow,
#: matplotlib, scikit-learn, tensorboard, pytest, onnx, onnxruntime and safetensors). The last
#: line are Ray's and prunetune's own requirements that none of those brings (a Python 3.12
#: with only them lacked each): under 2 MiB together, carried in case the image lacks them too.
BUNDLED = ("ray", "pydantic", "pydantic-core", "annotated-types", "typing-inspection",
           "jsonschema", "jsonschema-specifications", "referencing", "rpds-py", "tensorboardX",
           "torch-pruning",
           "click", "msgpack", "PyYAML", "requests", "urllib3", "idna", "charset-normalizer",
           "certifi", "attrs")
#: Top-level parts of Ray's wheel prunetune never imports (Tune, Train, core and the dashboard
#: modules Ray starts stay).
RAY_DROPPED = ("ray/jars/", "ray/rllib/", "ray/serve/", "ray/llm/", "ray/tests/",
               "ray/data/examples/", "ray/dashboard/client/build/")


def version_here(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def pinned() -> list[str]:
    """`name==version` of what the bundle carries, at the versions installed here."""
    pins = []
    for name in BUNDLED:
        version = version_here(name)
        if version is None:
            raise SystemExit(f"device_bundle: {name} is not installed here (make venv first)")
        pins.append(f"{name}=={version}")
    return pins


def download(pins: list[str], cache: Path) -> list[Path]:
    cache.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                           "--only-binary=:all:", *PIP_PLATFORM, "-d", str(cache), *pins],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"device_bundle: pip download failed:\n{done.stderr[-2000:]}")
    wheels = []
    for pin in pins:
        name, version = pin.split("==")
        stem = f"{name.replace('-', '_').lower()}-{version}-"
        found = [w for w in cache.glob("*.whl") if w.name.lower().startswith(stem)]
        if not found:
            raise SystemExit(f"device_bundle: no wheel for {pin} in {cache}")
        wheels.append(found[0])
    return wheels


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"


def trim_wheel(source: Path, target: Path, dropped: tuple[str, ...]) -> int:
    """Copy wheel `source` to `target` without the entries under `dropped`; its RECORD lists
    exactly the files kept (each with its hash and size), so pip installs it. Entries dropped."""
    removed = 0
    with zipfile.ZipFile(source) as wheel, zipfile.ZipFile(
            target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as trimmed:
        record_name = next(n for n in wheel.namelist() if n.endswith(".dist-info/RECORD"))
        lines = []
        for info in wheel.infolist():
            if info.filename.startswith(dropped):
                removed += 1
                continue
            if info.filename == record_name:
                continue
            data = wheel.read(info)
            trimmed.writestr(info, data)
            if not info.is_dir():
                lines.append(f"{info.filename},{_record_hash(data)},{len(data)}")
        lines.append(f"{record_name},,")
        trimmed.writestr(record_name, "\n".join(lines) + "\n")
    return removed


def reencode_flowers(source: Path, target: Path, size: int, quality: int) -> None:
    """Every image of `source/flowers-102/jpg` with its shorter side at `size` px, as JPEG at
    `quality`; the split and label files copied."""
    from PIL import Image

    images = sorted((source / "flowers-102" / "jpg").glob("*.jpg"))
    if not images:
        raise SystemExit(f"device_bundle: no Flowers-102 images under {source}/flowers-102/jpg")
    out = target / "flowers-102" / "jpg"
    out.mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(images):
        with Image.open(path) as image:
            scale = size / min(image.size)
            shape = (max(size, round(image.width * scale)), max(size, round(image.height * scale)))
            image.convert("RGB").resize(shape, Image.Resampling.LANCZOS).save(
                out / path.name, quality=quality, optimize=True)
        if index % 2000 == 0:
            print(f"device_bundle: flowers {index}/{len(images)}", flush=True)
    for name in ("imagelabels.mat", "setid.mat"):
        shutil.copy2(source / "flowers-102" / name, target / "flowers-102" / name)


def repository_bytes() -> int:
    """What travels of the repository: tracked files and untracked ones git does not ignore."""
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    return sum((REPO / n).stat().st_size for n in names if n and (REPO / n).is_file())


def tree_bytes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))
            if p.is_file()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/device_bundle.py",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--size", type=int, default=64, help="shorter side of the images, px")
    parser.add_argument("--quality", type=int, default=70, help="JPEG quality of the images")
    args = parser.parse_args(argv)
    wheels_dir, cache = DEVICE / "wheels", CACHE
    shutil.rmtree(wheels_dir, ignore_errors=True)
    wheels_dir.mkdir(parents=True)
    for wheel in download(pinned(), cache):
        if wheel.name.startswith("ray-"):
            removed = trim_wheel(wheel, wheels_dir / wheel.name, RAY_DROPPED)
            print(f"device_bundle: {wheel.name}: {wheel.stat().st_size / 2**20:.1f} MiB -> "
                  f"{(wheels_dir / wheel.name).stat().st_size / 2**20:.1f} MiB "
                  f"({removed} entries left out)")
        else:
            shutil.copy2(wheel, wheels_dir / wheel.name)
    data = DEVICE / "data"
    encoding = {"image_px": args.size, "jpeg_quality": args.quality}
    marker = data / "flowers-102" / "ENCODING.json"
    if not marker.is_file() or json.loads(marker.read_text()) != encoding:
        shutil.rmtree(data, ignore_errors=True)
        reencode_flowers(args.data, data, args.size, args.quality)
        marker.write_text(json.dumps(encoding) + "\n")
    files = tree_bytes(DEVICE)
    bundle, repository = sum(files.values()), repository_bytes()
    manifest = {"files": files, "bundle_bytes": bundle, "repository_bytes": repository,
                "limit_bytes": LIMIT_BYTES, "image_px": args.size, "jpeg_quality": args.quality}
    (DEVICE / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"device_bundle: .device/ {bundle / 2**20:.1f} MiB (wheels "
          f"{sum(v for k, v in files.items() if k.startswith('wheels')) / 2**20:.1f} MiB, "
          f"Flowers-102 {sum(v for k, v in files.items() if k.startswith('data')) / 2**20:.1f}"
          f" MiB) + repository {repository / 2**20:.1f} MiB of {LIMIT_BYTES / 2**20:.0f} MiB")
    room = LIMIT_BYTES - bundle - repository
    if room < 0:
        print(f"device_bundle: {-room / 2**20:.1f} MiB too big to travel in one run (a lower "
              "--quality shrinks the images)", file=sys.stderr)
        return 1
    print(f"device_bundle: {room / 2**20:.1f} MiB to spare")
    return 0


if __name__ == "__main__":
    sys.exit(main())
