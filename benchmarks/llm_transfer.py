"""Carry the language-model surrogate's base weights and missing wheels to the GPU machine in pieces.

One device call carries at most 64 MiB, the working tree included (35 MB on 2026-11-22, and growing with
the datasets), so the 98 MB SmolLM2 GGUF and the polars runtime (54 MB as a wheel) travel as an
xz-compressed tar stream (118 MiB) cut into parts of at most 24 MiB (five), one part per call, while the
machine stays warm between calls. If the tree grows past ~38 MB, ``resplit --part-mib 20`` cuts the same
stream into smaller parts without compressing it again.

Here (once)::

    .venv/bin/python benchmarks/llm_transfer.py pack            # -> .llm/part0/ ... .llm/partN/ (part + manifest)

On the GPU machine, one call per part, each carrying one folder (``carry: [".llm/partK"]``)::

    python3 benchmarks/llm_transfer.py receive .llm/partK       # copies it to /tmp/kernelcast-llm/parts

and, once every part is there (the last call may go straight on to training)::

    python3 benchmarks/llm_transfer.py unpack                   # checks the SHA-256, unpacks into /tmp/kernelcast-llm
    export PYTHONPATH=/tmp/kernelcast-llm/site KERNELCAST_SMOLLM2_GGUF=/tmp/kernelcast-llm/smollm2/...gguf

The stream holds ``smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` and ``site/`` (the unpacked wheels of polars,
polars-runtime-32 and gguf for CPython 3.12 on manylinux x86-64, the versions installed here).
Standard library only, so it runs on the bare GPU image.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import lzma
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEST = Path("/tmp/kernelcast-llm")
PART_MIB = 24
WHEELS = ("polars", "polars-runtime-32", "gguf")
"""Packages the GPU image lacks that the LLM surrogate's training run needs."""

SEARCH_WHEELS = ("optuna", "alembic", "colorlog", "sqlalchemy", "mako", "lightgbm", "lleaves", "llvmlite")
"""Packages the GPU image lacks that the GBM prior, the live search and the CPU throughput benchmark need
(``pack --with-search``); the image has scikit-learn, scipy, tqdm and PyYAML, and an llvmlite too new for
lleaves 1.3 (0.50: no ``PassManagerBuilder``), so llvmlite 0.44 travels."""

PLATFORM_ARGS = [
    "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
    "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_27_x86_64",
    "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64", "--platform", "manylinux1_x86_64",
]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pack(out: Path, part_mib: int, with_search: bool = False) -> None:
    """Write the compressed stream as parts of at most ``part_mib`` MiB plus ``manifest.json`` into ``out``."""
    sys.path.insert(0, str(ROOT))
    from kernelcast.surrogate.llm.base import locate_gguf

    gguf = locate_gguf()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part*"):
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        names = WHEELS + (SEARCH_WHEELS if with_search else ())
        pins = [f"{name}=={importlib.metadata.version(name)}" for name in names]
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *PLATFORM_ARGS, "-d",
                        str(tmp / "wheels"), *pins], check=True)
        site = tmp / "site"
        for wheel in sorted((tmp / "wheels").glob("*.whl")):
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(site)
        stream = tmp / "stream.tar.xz"
        with lzma.open(stream, "wb", preset=6) as xz, tarfile.open(fileobj=xz, mode="w|") as tar:
            tar.add(gguf, arcname=f"smollm2/{gguf.name}")
            tar.add(site, arcname="site")
        with stream.open("rb") as fh:
            _write_parts(fh, out, part_mib, {"stream_sha256": _sha256(stream), "stream_bytes": stream.stat().st_size,
                                             "gguf": gguf.name, "wheels": pins})


def _write_parts(stream: Any, out: Path, part_mib: int, manifest: dict[str, Any]) -> None:
    """Cut ``stream`` (a binary file) into ``out/partK/part-00K`` of ``part_mib`` MiB, each with the manifest."""
    part_bytes = part_mib * 1024 * 1024
    parts = []
    for i, chunk in enumerate(iter(lambda: stream.read(part_bytes), b"")):
        (out / f"part{i}").mkdir()
        part = out / f"part{i}" / f"part-{i:03d}"
        part.write_bytes(chunk)
        parts.append({"name": part.name, "bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
    manifest = {**manifest, "parts": parts}
    for i in range(len(parts)):
        (out / f"part{i}" / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"{len(parts)} parts in {out}: " + ", ".join(f"part{i} {p['bytes'] / 2**20:.1f} MiB"
                                                       for i, p in enumerate(parts)))


def resplit(out: Path, part_mib: int) -> None:
    """Cut the stream already in ``out`` into parts of ``part_mib`` MiB (when the working tree has grown)."""
    manifest = json.loads((out / "part0" / "manifest.json").read_text())
    with tempfile.TemporaryDirectory() as tmp_name:
        stream = Path(tmp_name) / "stream.tar.xz"
        with stream.open("wb") as fh:
            for i, p in enumerate(manifest["parts"]):
                fh.write((out / f"part{i}" / p["name"]).read_bytes())
        if _sha256(stream) != manifest["stream_sha256"]:
            sys.exit("the parts in the folder do not reassemble to the manifest's stream; run pack again")
        for old in out.glob("part*"):
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        with stream.open("rb") as fh:
            _write_parts(fh, out, part_mib, {k: v for k, v in manifest.items() if k != "parts"})


def receive(carried: Path, dest: Path) -> None:
    """Copy the part carried in this call (a folder ``.llm/partK``: the part and the manifest) to ``dest/parts``."""
    target = dest / "parts"
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for part in sorted(carried.glob("part-*")) + [carried / "manifest.json"]:
        if part.is_file():
            shutil.copyfile(part, target / part.name)
            copied.append(part.name)
    have = sorted(p.name for p in target.glob("part-*"))
    print(f"received {copied}; {dest}/parts now holds {have}")


def unpack(dest: Path) -> None:
    """Check every part against the manifest and unpack the stream into ``dest``."""
    parts_dir = dest / "parts"
    manifest = json.loads((parts_dir / "manifest.json").read_text())
    missing = [p["name"] for p in manifest["parts"] if not (parts_dir / p["name"]).is_file()]
    if missing:
        sys.exit(f"missing parts {missing}: carry them first (one call each, while the machine is warm)")
    digest = hashlib.sha256()
    for p in manifest["parts"]:
        data = (parts_dir / p["name"]).read_bytes()
        if hashlib.sha256(data).hexdigest() != p["sha256"]:
            sys.exit(f"part {p['name']} is corrupt (SHA-256 differs from the manifest)")
        digest.update(data)
    if digest.hexdigest() != manifest["stream_sha256"]:
        sys.exit("the reassembled stream's SHA-256 differs from the manifest")

    class _Parts:
        """A file-like reader over the parts in order (no reassembled copy on disk)."""

        def __init__(self) -> None:
            self.files = [(parts_dir / p["name"]).open("rb") for p in manifest["parts"]]
            self.i = 0

        def read(self, n: int = -1) -> bytes:
            out = b""
            while self.i < len(self.files) and (n < 0 or len(out) < n):
                chunk = self.files[self.i].read(-1 if n < 0 else n - len(out))
                if not chunk:
                    self.i += 1
                    continue
                out += chunk
            return out

    with lzma.open(_Parts(), "rb") as xz, tarfile.open(fileobj=xz, mode="r|") as tar:
        tar.extractall(dest, filter="data") if sys.version_info >= (3, 12) else tar.extractall(dest)
    gguf = dest / "smollm2" / manifest["gguf"]
    print(f"unpacked into {dest}: {gguf} ({gguf.stat().st_size / 2**20:.1f} MiB) and site/ ({manifest['wheels']})")
    print(f"export PYTHONPATH={dest / 'site'} KERNELCAST_SMOLLM2_GGUF={gguf} KERNELCAST_CACHE={dest / 'cache'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_pack = sub.add_parser("pack", help="here: write .llm/partK/ folders (one part and the manifest each)")
    p_pack.add_argument("--out", type=Path, default=ROOT / ".llm")
    p_pack.add_argument("--part-mib", type=int, default=PART_MIB)
    p_pack.add_argument("--with-search", action="store_true",
                        help="also the wheels of the GBM prior, the live search and the throughput benchmark")
    p_split = sub.add_parser("resplit", help="here: cut the packed stream into parts of another size")
    p_split.add_argument("--out", type=Path, default=ROOT / ".llm")
    p_split.add_argument("--part-mib", type=int, default=PART_MIB)
    p_recv = sub.add_parser("receive", help="GPU machine: keep the parts carried in this call")
    p_recv.add_argument("carried", type=Path, help="the carried folder, e.g. .llm/part0")
    p_recv.add_argument("--dest", type=Path, default=DEST)
    p_unpack = sub.add_parser("unpack", help="GPU machine: check and unpack every part")
    p_unpack.add_argument("--dest", type=Path, default=DEST)
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.out, args.part_mib, args.with_search)
    elif args.command == "resplit":
        resplit(args.out, args.part_mib)
    elif args.command == "receive":
        receive(args.carried, args.dest)
    else:
        unpack(args.dest)


if __name__ == "__main__":
    main()
