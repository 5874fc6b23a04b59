"""Import KernelBench baseline timings as records.

KernelBench (``results/timing``) keeps one folder per run, e.g. ``H100_modal``, holding one file per
PyTorch mode, ``baseline_time_<mode>.json``::

    {"level1": {"1_Square_matrix_multiplication_.py": {"mean", "std", "min", "max", "num_trials",
                                                        "hardware", "device"}, ...}, ...}

with times in ms. How an entry becomes a :class:`~kernelcast.measurement.records.Record`:

- ``family`` is ``"kernelbench/<level>/<problem>"`` (the problem file name without ``.py``).
- ``variant`` and ``config["mode"]`` are the mode: ``"torch_eager"`` for ``baseline_time_torch.json``, else
  the rest of the file name (``"torch_compile_inductor_default"``, ...). Within a task the modes are the
  candidates, so their runtimes are compared with each other.
- ``problem`` is ``{"run": <folder>}``: a problem file fixes its shapes in its source, and runs of different
  KernelBench versions (``A6000_babel`` versus ``A6000_babel_level4_new``) may define a problem differently,
  so runtimes are compared only within one run.
- ``dtype`` is ``"float32"`` (KernelBench's default; the files do not say). ``source_hash`` hashes the level,
  problem and mode (the files hold no source text).
- ``device`` is the entry's ``hardware``: one run folder can mix GPUs (``H100_modal`` holds H200 timings too).

Statistics, the choice made. KernelBench reports ``mean``, ``std``, ``min``, ``max`` and ``num_trials``, no
samples and no median. The records keep the schema honest rather than invent samples: ``samples_ms`` is
empty and :class:`~kernelcast.measurement.records.TimingStats` is built from the given fields, with
``median_ms = mean_ms = mean`` (so ``time_ms`` is the **mean**), ``cv = std / mean``,
``rse_median = 1.2533 * std / sqrt(num_trials) / mean``, ``n_samples = num_trials`` and ``iqr_ms = NaN``
(not reported). The protocol says so: ``{"statistic": "mean", ...}``.

Entries without timing. A ``null`` entry (the baseline did not run: a crash, out of memory, a compile
failure; the file does not say which) becomes a ``runtime_error`` record on the one GPU its file or folder
names; where that GPU is ambiguous and no ``device`` is given, the entry is skipped and counted in a warning.
An entry with a number missing (``std``, ...) or no ``hardware`` and no GPU to fall back on is an error
naming the file and the field: some runs (``A6000_babel_new``) hold only a ``mean`` in another unit.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kernelcast.datasets.importers._reading import load_json, malformed
from kernelcast.exceptions import InvalidParameterError
from kernelcast.measurement.records import Record, Status, TimingStats, canonical_json, source_hash

logger = logging.getLogger(__name__)

ORIGIN = "import:kernelbench"

_FILE_RE = re.compile(r"^baseline_time_(.+)\.json$")
_NUMBER_FIELDS = ("mean", "std", "min", "max", "num_trials")


def mode_from_filename(name: str) -> str:
    """Return the PyTorch mode a timing file holds, from its name (``baseline_time_torch.json`` -> eager)."""
    match = _FILE_RE.match(name)
    if match is None:
        raise InvalidParameterError(
            f"The KernelBench timing file name {name!r} does not match 'baseline_time_<mode>.json'."
        )
    mode = match.group(1)
    return "torch_eager" if mode == "torch" else mode


def timing_files(path: str | os.PathLike[str]) -> list[Path]:
    """Return the KernelBench timing files at ``path``: the file itself, or every one under the folder."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InvalidParameterError(f"The KernelBench path {str(path)!r} is neither a file nor a folder.")
    files = sorted(p for p in path.rglob("baseline_time_*.json") if p.is_file())
    if not files:
        raise InvalidParameterError(f"The folder {str(path)!r} holds no KernelBench 'baseline_time_*.json' file.")
    return files


def _source_commits(folder: Path) -> dict[str, str]:
    """Map ``<run>/<file>`` to a commit from a ``SOURCE.txt`` (``<commit>:results/timing/<run>/<file>``)."""
    for candidate in (folder / "SOURCE.txt", folder.parent / "SOURCE.txt"):
        if candidate.is_file():
            commits = {}
            for line in candidate.read_text(encoding="utf-8").splitlines():
                commit, _, rel = line.strip().partition(":")
                parts = rel.split("/")
                if len(parts) >= 2:
                    commits["/".join(parts[-2:])] = commit
            return commits
    return {}


def _hardware_names(document: dict[str, Any]) -> collections.Counter[str]:
    return collections.Counter(
        entry["hardware"]
        for problems in document.values()
        if isinstance(problems, dict)
        for entry in problems.values()
        if isinstance(entry, dict) and isinstance(entry.get("hardware"), str) and entry["hardware"].strip()
    )


def _entries(path: Path, document: Any) -> Iterator[tuple[str, str, Any]]:
    if not isinstance(document, dict):
        raise malformed(path, "(file)", f"is a JSON {type(document).__name__}, not a mapping of levels")
    for level, problems in document.items():
        if not isinstance(problems, dict):
            raise malformed(path, level, "is not a mapping of problem files to timings")
        for problem, entry in problems.items():
            yield level, problem, entry


def read_kernelbench_file(
    path: str | os.PathLike[str],
    *,
    device: str | None = None,
    folder_hardware: collections.Counter[str] | None = None,
) -> list[Record]:
    """Read one KernelBench timing file as records (see the module docstring).

    Parameters
    ----------
    path : path-like
        A ``baseline_time_<mode>.json`` file inside its run folder.
    device : str, optional
        GPU name for entries that name none (``null`` entries, old files), where neither the file nor its
        folder names exactly one GPU.
    folder_hardware : Counter, optional
        GPU names found in the other files of the run folder, to place ``null`` entries.
    """
    path = Path(path)
    mode = mode_from_filename(path.name)
    run = path.parent.name
    document = load_json(path)
    entries = list(_entries(path, document))
    named = _hardware_names(document) or folder_hardware or collections.Counter()
    fallback = next(iter(named)) if len(named) == 1 else device
    commit = _source_commits(path.parent.parent).get(f"{run}/{path.name}")
    protocol = {"source": "kernelbench", "statistic": "mean", "run": run, "mode": mode, "file": path.name}
    if commit:
        protocol["source_commit"] = commit
    records: list[Record] = []
    skipped = 0
    for level, problem, entry in entries:
        where = f"{level}.{problem}"
        common = dict(
            family=f"kernelbench/{level}/{problem.removesuffix('.py')}",
            variant=mode,
            source_hash=source_hash(canonical_json({"kernelbench": [level, problem, mode]})),
            config={"mode": mode},
            problem={"run": run},
            dtype="float32",
            protocol=protocol,
            origin=ORIGIN,
        )
        if entry is None:
            if fallback is None:
                skipped += 1
                continue
            records.append(
                Record(
                    device=fallback,
                    status=Status.RUNTIME_ERROR,
                    error="KernelBench recorded no timing for this problem (null entry)",
                    fingerprint={"device_name": None},
                    **common,
                )
            )
            continue
        if not isinstance(entry, dict):
            raise malformed(path, where, f"is {entry!r}, not an object or null")
        for field in _NUMBER_FIELDS:
            value = entry.get(field)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise malformed(path, f"{where}.{field}", "is missing" if value is None else f"is {value!r}")
        mean, std, n = float(entry["mean"]), float(entry["std"]), int(entry["num_trials"])
        if mean <= 0 or std < 0 or n < 1:
            raise malformed(path, f"{where}.mean", f"is {mean!r} with std {std!r} over {n} trials")
        hardware = entry.get("hardware")
        if not isinstance(hardware, str) or not hardware.strip():
            if device is None:
                raise malformed(path, f"{where}.hardware", "is missing; name the GPU with device= (CLI: --device)")
            hardware = device
        stats = TimingStats(
            median_ms=mean,
            mean_ms=mean,
            min_ms=float(entry["min"]),
            max_ms=float(entry["max"]),
            iqr_ms=math.nan,
            cv=std / mean,
            rse_median=1.2533 * std / math.sqrt(n) / mean,
            n_samples=n,
        )
        records.append(
            Record(
                device=hardware.strip(),
                status=Status.OK,
                stats=stats,
                fingerprint={"device_name": entry.get("hardware"), "torch_device": entry.get("device")},
                **common,
            )
        )
    if skipped:
        logger.warning(
            "%s: skipped %d null entries: they name no GPU and the run names %s; pass device= to keep them",
            path,
            skipped,
            sorted(named) or "none",
        )
    return records


def import_kernelbench(
    path: str | os.PathLike[str],
    *,
    device: str | None = None,
    skip_unreadable: bool = False,
) -> list[Record]:
    """Read every KernelBench timing file at ``path`` (a file, a run folder, or the ``timing`` folder).

    Parameters
    ----------
    path : path-like
        Where to look for ``baseline_time_*.json`` files (recursively).
    device : str, optional
        GPU name for entries that name none; see :func:`read_kernelbench_file`.
    skip_unreadable : bool
        Log and skip a file that cannot be read instead of raising its error.

    Returns
    -------
    list of Record
        One record per timed problem and mode (plus ``runtime_error`` records for ``null`` entries).
    """
    files = timing_files(path)
    by_folder: dict[Path, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for file in files:
        try:
            by_folder[file.parent].update(_hardware_names(load_json(file)))
        except InvalidParameterError:
            pass  # reported when the file itself is read below
    records: list[Record] = []
    for file in files:
        try:
            records.extend(read_kernelbench_file(file, device=device, folder_hardware=by_folder[file.parent]))
        except InvalidParameterError as exc:
            if not skip_unreadable:
                raise
            logger.warning("skipped %s: %s", file, exc)
    return records
