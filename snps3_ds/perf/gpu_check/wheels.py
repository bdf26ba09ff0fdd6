"""The wheels the GPU node lacks, fetched here and unpacked there without pip, a venv or a network.

The node has its own Python 3.12 with torch (CUDA 13), transformers, timm and numpy, but no DeepSpeed, DALI,
PyAV, decord or webdataset, and files reach it in transfers of at most 64 MiB. So `download` (here, with
PyPI) writes:
  gpu_wheels/base/   DeepSpeed (pure Python: its ops build just in time, and the check needs none), webdataset,
                     PyAV, decord and their small dependencies, DALI's wds2idx.py (the shard writer's index
                     writer) and the BERT tokenizer files: about 56 MB, one transfer;
  gpu_wheels/dali/   the DALI CUDA 13 wheel and its dependencies (about 270 MB) as one tar cut into parts of
                     at most PART_BYTES, one transfer each, with their sha256 in dali/MANIFEST.json.
`unpack` (on the node) joins the DALI parts when all have arrived (and their hashes match) and extracts every
wheel into one folder, which the check's processes get on PYTHONPATH. A wheel is a zip of its site-packages
layout, so extracting it is installing it (entry-point scripts aside; ninja's binary is put on PATH instead).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

NODE_PYTHON = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux2014_x86_64", "manylinux_2_17_x86_64",
             "manylinux2010_x86_64", "manylinux_2_12_x86_64")
DEEPSPEED = "deepspeed==0.19.8"  # an sdist on PyPI: built here into a pure-Python wheel (ops are built just in time)
BASE = ("webdataset==1.0.2", "av==18.1.0", "decord==0.6.0", "psutil", "hjson", "py-cpuinfo",
        "msgpack", "einops", "ninja", "nvidia-ml-py", "pydantic>=2", "braceexpand")
DALI = ("nvidia-dali-cuda130==2.4.0",)
# What the node's own environment provides (the dependencies of torch, transformers and timm): never shadowed.
# Anything else a wheel needs is carried, even when it is small and common (six, wheel).
NODE_HAS = frozenset({"numpy", "torch", "pyyaml", "packaging", "typing-extensions", "tqdm", "filelock", "jinja2",
                      "sympy", "networkx", "fsspec", "setuptools"})
PART_BYTES = 58 * 2 ** 20  # below the 64 MiB transfer limit, with room for the repository itself
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
TOKENIZER_DIR = "snps3_tokenizer"
# Top-level packages that the node's torch also ships files under: some wheels give them an empty __init__.py,
# which would hide the node's half; a pkgutil __init__ joins both halves (as nvimgcodec's own does).
SHARED_NAMESPACES = {"nvidia/__init__.py": "__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n"}


def _project(wheel: Path) -> str:
    return wheel.name.split("-")[0].lower().replace("_", "-")


def _pip_download(specs: tuple[str, ...], out: Path) -> None:
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--implementation", "cp",
                    "--python-version", NODE_PYTHON, *platforms, "-d", str(out), *specs], check=True)
    for wheel in out.glob("*.whl"):
        if _project(wheel) in NODE_HAS:
            wheel.unlink()


def download(out: Path) -> dict:
    """Fill out/base and out/dali (see the module docstring); returns what was written."""
    base, dali, staging = out / "base", out / "dali", out / "dali_wheels"
    for folder in (base, dali, staging):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(base), DEEPSPEED], check=True)
    _pip_download(BASE, base)
    _pip_download(DALI, staging)
    dali_wheel = next(staging.glob("nvidia_dali_cuda130-*.whl"))
    with zipfile.ZipFile(dali_wheel) as archive:
        (base / "wds2idx.py").write_bytes(archive.read("wds2idx.py"))
    _copy_tokenizer(base / TOKENIZER_DIR)
    manifest = split_into_parts(sorted(staging.glob("*.whl")), dali)
    shutil.rmtree(staging)
    sizes = {"base_bytes": sum(p.stat().st_size for p in base.rglob("*") if p.is_file()), **manifest}
    return sizes


def _copy_tokenizer(target: Path) -> None:
    """The packaged BERT tokenizer's files (not its weights: the check builds a random-init BERT)."""
    from snps3_ds.local_files import packaged_text_model_dir

    target.mkdir(parents=True, exist_ok=True)
    (target / "__init__.py").write_text('"""BERT tokenizer files for the GPU check (no weights)."""\n')
    for name in TOKENIZER_FILES:
        source = packaged_text_model_dir() / name
        if source.is_file():
            shutil.copy2(source, target / name)


def split_into_parts(wheels: list[Path], out: Path, part_bytes: int = PART_BYTES) -> dict:
    """One uncompressed tar of `wheels` cut into out/part-NN files of at most part_bytes, and MANIFEST.json."""
    tar_path = out / "dali.tar"
    with tarfile.open(tar_path, "w") as tar:
        for wheel in wheels:
            tar.add(wheel, arcname=wheel.name)
    parts, digest = [], hashlib.sha256()
    with tar_path.open("rb") as source:
        while chunk := source.read(part_bytes):
            digest.update(chunk)
            part = out / f"part-{len(parts):02d}"
            part.write_bytes(chunk)
            parts.append({"name": part.name, "bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
    tar_path.unlink()
    manifest = {"wheels": [w.name for w in wheels], "parts": parts, "sha256": digest.hexdigest()}
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))
    return {"dali_parts": len(parts), "dali_bytes": sum(p["bytes"] for p in parts)}


def join_parts(folder: Path) -> tuple[list[Path], str]:
    """The DALI wheels from folder/part-NN once all have arrived intact: ([wheels], "") or ([], why not)."""
    manifest_path = folder / "MANIFEST.json"
    if not manifest_path.is_file():
        return [], f"no {manifest_path} (the DALI parts were not carried)"
    manifest = json.loads(manifest_path.read_text())
    missing = [p["name"] for p in manifest["parts"] if not (folder / p["name"]).is_file()]
    if missing:
        return [], f"DALI parts missing in {folder}: {', '.join(missing)} of {len(manifest['parts'])}"
    bad = [p["name"] for p in manifest["parts"]
           if hashlib.sha256((folder / p["name"]).read_bytes()).hexdigest() != p["sha256"]]
    if bad:
        return [], f"DALI parts with a wrong sha256 in {folder}: {', '.join(bad)} (carry them again)"
    target = folder / "wheels"
    target.mkdir(exist_ok=True)
    tar_path = folder / "dali.tar"
    with tar_path.open("wb") as joined:
        for part in manifest["parts"]:
            joined.write((folder / part["name"]).read_bytes())
    with tarfile.open(tar_path) as tar:
        tar.extractall(target, filter="data")
    tar_path.unlink()
    return [target / name for name in manifest["wheels"]], ""


def extract_wheel(wheel: Path, site: Path) -> None:
    """A wheel's files into `site`, as pip would lay them out (purelib/platlib data folded in), modes kept."""
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            name = info.filename
            parts = name.split("/")
            if parts[0].endswith(".data"):
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    continue  # scripts, headers, data: not needed to import the package
                name = "/".join(parts[2:])
            if name.endswith("/"):
                continue
            target = site / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if name in SHARED_NAMESPACES:  # merge with the node's own nvidia/ (torch's CUDA libraries)
                target.write_text(SHARED_NAMESPACES[name])
                continue
            with archive.open(info) as source, target.open("wb") as out:
                shutil.copyfileobj(source, out)
            mode = info.external_attr >> 16
            if mode:
                target.chmod(mode & 0o777 | 0o600)


def unpack(wheels_dir: Path, site: Path) -> dict:
    """Extract base wheels (and DALI, when complete) into `site`, once per wheel; returns what happened."""
    site.mkdir(parents=True, exist_ok=True)
    done_file = site / ".unpacked.json"
    done = set(json.loads(done_file.read_text())) if done_file.is_file() else set()
    base = wheels_dir / "base"
    wheels = sorted(base.glob("*.whl")) if base.is_dir() else []
    dali, dali_note = join_parts(wheels_dir / "dali") if not any(n.startswith("nvidia_dali") for n in done) else ([], "")
    for wheel in [*wheels, *dali]:
        if wheel.name not in done:
            extract_wheel(wheel, site)
            done.add(wheel.name)
    for extra in ("wds2idx.py", TOKENIZER_DIR):
        source = base / extra
        if source.is_file():
            shutil.copy2(source, site / extra)
        elif source.is_dir():
            shutil.copytree(source, site / extra, dirs_exist_ok=True)
    done_file.write_text(json.dumps(sorted(done)))
    return {"site": str(site), "wheels": sorted(done), "dali": any(n.startswith("nvidia_dali") for n in done),
            "dali_note": dali_note}
