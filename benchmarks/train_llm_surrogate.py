"""Train, calibrate and evaluate the language-model surrogate on one split; measure its GPU throughput.

The device calls, in order, each within 30 s of the last so the machine stays warm (its /tmp survives):
first, here, once: ``.venv/bin/python benchmarks/llm_transfer.py pack --with-search --part-mib 32`` (writes
``.llm/part0`` .. ``part4``, ignored by git: ``/.llm/`` in ``.git/info/exclude``; ``--with-search`` adds lightgbm
for the GBM prior). A call carries at most 64 MiB with the working tree: leave the large folders that training
does not read (``datasets/kernel_tuner``, ``models/``, ``benchmarks/results``) out of git's index for the
transfer calls (``git rm -r --cached`` plus ``.git/info/exclude``, ``git reset`` afterwards). Then

1. carry ``.llm/part0``: ``python3 benchmarks/llm_transfer.py receive .llm/part0``
2. to 4. the same with ``.llm/part1``, ``.llm/part2``, ``.llm/part3``
5. carry ``.llm/part4``, timeout 600 (about 9 minutes)::

       python3 benchmarks/llm_transfer.py receive .llm/part4 && python3 benchmarks/llm_transfer.py unpack &&
       export PYTHONPATH=/tmp/kernelcast-llm/site KERNELCAST_CACHE=/tmp/kernelcast-llm/cache PYTHONUNBUFFERED=1
       KERNELCAST_SMOLLM2_GGUF=/tmp/kernelcast-llm/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf &&
       source benchmarks/device_env.sh && set -o pipefail &&
       python3 benchmarks/train_llm_surrogate.py --split shapes --minutes 4.8 --param batch_size=512 \
           --param head_learning_rate=3e-4 --param prior_groups=shapes --out $OUT 2>&1 | tee $OUT/train_shapes.log

6. no carry, timeout 600: the same exports and ``source``, then ``--split variants --param batch_size=256
   --param prior_groups=variants`` (batch 512 ran out of an H100's memory on this split).

``--load DIR`` measures the throughput of a trained model directory without training.

Training longer than one call allows (``--minutes`` above :data:`MAX_CALL_MINUTES`): give a checkpoint file
that survives between calls and the training minutes of each call, e.g. ``--minutes 15 --slice-minutes 5
--checkpoint /tmp/kernelcast-llm/train_shapes.pt``, and run the very same command again, each call within
30 s of the last, until it exits with status 0. A call whose slice ends before the budget saves the
checkpoint, prints ``training slice ended at step N (M of T s trained); ...`` and exits with status 3,
writing nothing under ``--out``; the next call resumes where it stopped (the same rows, seed and parameters,
else it stops with an error naming what differs). The last call trains what is left of the budget (at most
one slice) and then calibrates, evaluates and writes the files as a single call does, so choose the slice
short enough to leave it time for that. With the GBM prior (``prior="gbm"``) every call fits the prior before
training; with ``prior="mix"`` only the last one fits its GBMs.

Here, the GBM on the very same split (same holdouts, seed and calibration groups), for the side-by-side::

    .venv/bin/python benchmarks/train_llm_surrogate.py --model gbm --split shapes --out /tmp/gbm_shapes

Splits (``--split``), both with ``calibration="group"``: whole held-out groups calibrate, because an LLM
cannot be cross-calibrated by refitting a clone per fold in the time budget, and the GBM gets the same:

- ``shapes``: the held-out shapes of ``benchmarks/bench_surrogate_evaluations.py`` (one irregular shape per
  family: ``M=1000,N=3000``, ``S=1000``, ``M=127``);
- ``variants``: held-out source variants :data:`HELD_OUT_VARIANTS` (softmax/online, layernorm/welford,
  matmul/persistent, attention/fa2); the other variants of those families, on every shape, stay in
  training, and the source texts of the held-out ones are given to the model (a candidate's source is
  known before it is measured).

Writes under ``--out`` (at most 4 files, as the device tool brings back at most 8):

- ``<model>_<split>.tar``: the model directory (``model.json``, safetensors, sources, training log);
- ``llm_surrogate_<split>.json`` (``llm_surrogate_baseline_gbm_<split>.json`` for the GBM): every metric of
  :func:`~kernelcast.surrogate.evaluation.evaluate_surrogate` on the test side, plus split, calibration,
  training log, timing, device and versions;
- ``llm_surrogate_throughput_<split>.json`` (``--model llm`` on a GPU): batched bf16 forecasts per second,
  end to end (``forecast``: prompts, task levels, the model) and model only, at several batch sizes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import platform
import statistics
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "datasets" / "kernelcast"

ODD_SHAPES = ['problem="N":3000', 'problem="S":1000', 'problem="M":127']
"""Held-out shapes (as in benchmarks/bench_surrogate_evaluations.py)."""

HELD_OUT_VARIANTS = ["variant=online", "variant=welford", "variant=persistent", "variant=fa2"]
"""Held-out source variants: each matches exactly one (family, variant) of datasets/kernelcast."""

SPLITS = {"shapes": ("shapes", ODD_SHAPES), "variants": ("variants", HELD_OUT_VARIANTS)}

MAX_CALL_MINUTES = 6.0
"""Most training minutes in one call: a device call ends after 10 minutes, and loading, the GBM prior,
calibration, evaluation and the throughput run need the rest."""

SLICE_ENDED_EXIT = 3
"""Exit status of a call whose training slice ended before the budget: run the same command again."""


def _device_info() -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    else:
        info["gpu"] = None
    for name in ("transformers", "peft", "polars", "numpy"):
        try:
            import importlib.metadata

            info[name] = importlib.metadata.version(name)
        except Exception:  # noqa: BLE001 - a missing package is recorded as absent
            info[name] = None
    return info


def throughput(model, candidates, batch_sizes: list[int], repeats: int) -> dict:
    """Forecasts per second of ``model`` on ``candidates``, per batch size: end to end (``forecast``) in its first
    pass over them (``first_pass_*``) and in the steady state (the median of ``repeats`` passes after it), and
    the language model alone (``model_*``, after the end-to-end passes)."""
    import torch

    texts, keys, suffixes = model.prompts(candidates)
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    out = {"n_candidates": candidates.height, "n_prefixes": len(texts), "dtype": model.regressor_.default_dtype(),
           "by_batch_size": {}}
    prior = None
    if getattr(model, "prior_", None) is not None:  # the GBM prior (CPU), timed on its own
        model._prior_columns(model.prior_, candidates.head(100))
        start = time.perf_counter()
        prior = model._prior_columns(model.prior_, candidates)
        elapsed = time.perf_counter() - start
        out["prior_seconds"] = round(elapsed, 4)
        out["prior_per_second"] = round(candidates.height / elapsed)
    out["host_seconds"] = _host_breakdown(model, candidates, suffixes)
    for batch in batch_sizes:
        model.set_params(inference_batch_size=batch)
        model.forecast(candidates.head(2 * batch))  # warm-up (kernels, allocator)
        sync()
        # The first pass over the candidates meets most prompt-prefix lengths and batch shapes for the first
        # time (kernel selection, allocator growth): timed on its own, then the repeats time the steady state.
        start = time.perf_counter()
        model.forecast(candidates)
        sync()
        first = time.perf_counter() - start
        end_to_end, model_only = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            model.forecast(candidates)
            sync()
            end_to_end.append(time.perf_counter() - start)
            model.regressor_._suffix_ids.clear()  # tokenising the suffixes counts in the model-only time too
            model.regressor_._prefix_ids.clear()
            start = time.perf_counter()
            model.regressor_.predict(texts, keys, suffixes, batch_size=batch, prior=prior)
            sync()
            model_only.append(time.perf_counter() - start)
        e2e, only = statistics.median(end_to_end), statistics.median(model_only)
        out["by_batch_size"][str(batch)] = {
            "forecast_seconds": round(e2e, 4), "forecast_per_second": round(candidates.height / e2e),
            "model_seconds": round(only, 4), "model_per_second": round(candidates.height / only),
            "first_pass_seconds": round(first, 4), "first_pass_per_second": round(candidates.height / first),
        }
        print(f"throughput batch {batch}: {out['by_batch_size'][str(batch)]}", flush=True)
    best = max(out["by_batch_size"].values(), key=lambda r: r["forecast_per_second"])
    out["forecast_per_second"] = best["forecast_per_second"]
    out["model_per_second"] = best["model_per_second"]
    return out


def _host_breakdown(model, candidates, suffixes: list[str]) -> dict:
    """Seconds of the host-side (CPU) steps of one ``forecast`` of ``candidates`` (``suffixes``: their prompt
    suffixes), each timed alone."""
    from kernelcast.surrogate.llm import prompts

    prompts.compress_source.cache_clear()
    steps = {"prompts": lambda: model.prompts(candidates), "task_levels": lambda: model._level(candidates)}
    if getattr(model, "prior_", None) is not None:
        steps["gbm"] = lambda: model.prior_._predict_raw(candidates)
    model.regressor_._suffix_ids.clear()
    steps["tokenize_suffixes"] = lambda: model.regressor_.suffix_ids(suffixes)
    out = {}
    for name, step in steps.items():
        start = time.perf_counter()
        step()
        out[name] = round(time.perf_counter() - start, 4)
    return out


def _write_throughput(model, split, args, loaded: str | None = None) -> None:
    """On a GPU: time ``model`` on a seeded sample of the split's test candidates; write the JSON."""
    import torch

    if not torch.cuda.is_available():
        return
    test_candidates = split.test.select(
        ["family", "variant", "source_hash", "config_json", "problem_json", "dtype", "device"])
    if test_candidates.height > args.throughput_candidates:
        test_candidates = test_candidates.sample(args.throughput_candidates, seed=args.seed)
    bench = throughput(model, test_candidates, [int(b) for b in args.batch_sizes.split(",")],
                       args.throughput_repeats)
    bench.update({
        "benchmark": "LLM surrogate forecasts per second on the GPU (batched, shared-prefix KV cache)",
        "split": args.split,
        "model_dir": loaded,
        "prior": getattr(model, "prior", "none"),
        "candidates": "a seeded sample of the split's test records (their candidate columns)",
        "target_per_second": 1000,
        "environment": _device_info(),
        "command": " ".join(sys.argv),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    })
    (args.out / f"llm_surrogate_throughput_{args.split}.json").write_text(json.dumps(bench, indent=1) + "\n")


def _check_call_minutes(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Stop with a usage error unless one call trains at most :data:`MAX_CALL_MINUTES`."""
    if args.load is not None:
        return
    if args.model != "llm":
        if args.checkpoint is not None or args.slice_minutes is not None:
            parser.error(f"--checkpoint and --slice-minutes train the LLM surrogate in slices; --model {args.model} "
                         "trains in one call")
        return
    if args.slice_minutes is not None and args.checkpoint is None:
        parser.error(f"--slice-minutes {args.slice_minutes:g} needs --checkpoint PATH (the file the next call "
                     "resumes from)")
    if args.slice_minutes is not None and not 0 < args.slice_minutes <= MAX_CALL_MINUTES:
        parser.error(f"--slice-minutes must be in (0, {MAX_CALL_MINUTES:g}]. Got {args.slice_minutes:g}.")
    if args.minutes > MAX_CALL_MINUTES and args.slice_minutes is None:
        parser.error(f"--minutes {args.minutes:g} is more than one call may train ({MAX_CALL_MINUTES:g}): add "
                     f"--checkpoint PATH and --slice-minutes X (X <= {MAX_CALL_MINUTES:g}) to train over several "
                     "calls")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("llm", "gbm"), default="llm")
    parser.add_argument("--split", choices=tuple(SPLITS), default="shapes")
    parser.add_argument("--minutes", type=float, default=5.0,
                        help=f"LLM training budget over every call (minutes; more than {MAX_CALL_MINUTES:g} needs "
                             "--checkpoint and --slice-minutes)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="LLM training state file: resumed from when it exists, written when a slice ends")
    parser.add_argument("--slice-minutes", type=float, default=None,
                        help=f"LLM training minutes of this call (<= {MAX_CALL_MINUTES:g}; needs --checkpoint); exit "
                             f"status {SLICE_ENDED_EXIT} when training is not finished: run again to resume")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--param", action="append", default=[], help="extra hyperparameter key=value (JSON value)")
    parser.add_argument("--batch-sizes", default="256,512,1024", help="throughput batch sizes (GPU only)")
    parser.add_argument("--throughput-candidates", type=int, default=10_000, help="test candidates timed")
    parser.add_argument("--throughput-repeats", type=int, default=2)
    parser.add_argument("--load", type=Path, default=None,
                        help="a trained LLM model directory: measure its throughput only (no training)")
    parser.add_argument("--refit-mix", action="store_true",
                        help="with --load: choose the mix weights again (LLMSurrogate.refit_mix; --param "
                             "mix_by_family=true for a weight per family), then calibrate and evaluate as after "
                             "training")
    parser.add_argument("--smoke-rows", type=int, default=None,
                        help="CPU smoke run: keep this many records of each side of the split")
    args = parser.parse_args()
    if args.refit_mix and args.load is None:
        parser.error("--refit-mix chooses the mix weights of a trained model: give it with --load DIR")
    _check_call_minutes(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)

    import tempfile

    from kernelcast.datasets import load, open_store
    from kernelcast.surrogate._artifact import json_safe
    from kernelcast.surrogate.evaluation import evaluate_surrogate, make_split
    from kernelcast.surrogate.evaluation.protocol import parse_params
    from kernelcast.surrogate.llm.forecaster import TrainingSliceEnded
    from kernelcast.surrogate.registry import make_surrogate

    started = time.perf_counter()
    frame = load(args.data)
    sources = open_store(args.data).sources()
    kind, holdouts = SPLITS[args.split]
    split = make_split(frame, kind, holdouts, seed=args.seed, calibration="group")
    if args.smoke_rows:
        import dataclasses

        split = dataclasses.replace(split, **{side: getattr(split, side).sample(
            min(args.smoke_rows, getattr(split, side).height), seed=args.seed) for side in ("train", "calibration", "test")})
    described = split.describe()
    print(f"split {args.split}: {described['n_train']} train, {described['n_calibration']} calibration, "
          f"{described['n_test']} test records; calibration groups {described['calibration_groups']}", flush=True)
    if args.load is not None and not args.refit_mix:
        from kernelcast.surrogate import load_surrogate

        args.out.mkdir(parents=True, exist_ok=True)
        _write_throughput(load_surrogate(args.load), split, args, loaded=str(args.load))
        return
    params = {"random_state": args.seed, **parse_params(args.param)}
    if args.load is not None:  # --refit-mix: choose the mix weights of a trained model again, then as below
        from kernelcast.surrogate import load_surrogate

        model = load_surrogate(args.load)
        model.set_params(**{k: v for k, v in params.items() if k != "random_state"})
        t0 = time.perf_counter()
        model.refit_mix(split.train, sources=sources)
        fit_s = time.perf_counter() - t0
    elif args.model == "llm":
        params.update(max_minutes=args.minutes)
        if args.max_steps is not None:
            params["max_steps"] = args.max_steps
        if args.checkpoint is not None:
            params["checkpoint"] = str(args.checkpoint)
        if args.slice_minutes is not None:
            params["slice_minutes"] = args.slice_minutes
    if args.load is None:
        model = make_surrogate(args.model, **params)
        t0 = time.perf_counter()
        try:
            model.fit(split.train, sources=sources, data_path=args.data)
        except TrainingSliceEnded as ended:
            print(f"training slice ended at step {ended.steps} ({ended.seconds:.0f} of {ended.max_seconds:.0f} s "
                  f"trained; state in {ended.checkpoint}); run again with the same arguments to resume", flush=True)
            sys.exit(SLICE_ENDED_EXIT)
        fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.calibrate(split.calibration)
    calibrate_s = time.perf_counter() - t0
    state = model.calibration_
    print(f"fit {fit_s:.0f} s, calibrate {calibrate_s:.0f} s: interval offset {state.interval_offset:.3g}, "
          f"skip thresholds {state.skip_threshold} / {state.skip_threshold_relative}", flush=True)

    name = "llm_surrogate" if args.model == "llm" else f"llm_surrogate_baseline_{args.model}"
    args.out.mkdir(parents=True, exist_ok=True)
    model_dir = Path(tempfile.mkdtemp(prefix="kernelcast-model-")) / f"{args.model}_{args.split}"
    model.save(model_dir, extra={"split": described, "data": str(args.data)})
    with tarfile.open(args.out / f"{args.model}_{args.split}.tar", "w") as tar:
        tar.add(model_dir, arcname=model_dir.name)

    t0 = time.perf_counter()
    evaluation = evaluate_surrogate(model, split.test, seed=args.seed)
    evaluate_s = time.perf_counter() - t0
    calibration = state.to_dict()
    for key in ("residuals", "pair_residuals", "pair_calibrator"):
        calibration.pop(key, None)
    result = {
        **evaluation.metrics,
        "model": args.model,
        "split": described,
        "split_name": args.split,
        "calibration": calibration,
        "params": model.get_params(deep=False),
        "training_data": model.training_data_,
        "training": {k: v for k, v in (getattr(model, "training_log_", None) or {}).items() if k != "history"},
        "seconds": {"fit": round(fit_s, 1), "calibrate": round(calibrate_s, 1), "evaluate": round(evaluate_s, 1),
                    "total": round(time.perf_counter() - started, 1)},
        "per_task": evaluation.per_task,
        "environment": _device_info(),
        "command": " ".join(sys.argv),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    (args.out / f"{name}_{args.split}.json").write_text(json.dumps(json_safe(result), indent=1) + "\n")
    headline = ("pairwise_accuracy", "ece", "kendall_tau", "bin8_accuracy", "interval_coverage", "skip_error",
                "skip_rate", "defer_rate")
    print({k: round(evaluation.metrics[k], 4) for k in headline}, flush=True)

    if args.model == "llm":
        _write_throughput(model, split, args)
    print(f"done in {time.perf_counter() - started:.0f} s; files in {args.out}: "
          f"{sorted(p.name for p in args.out.iterdir() if p.is_file())}", flush=True)


if __name__ == "__main__":
    main()
