"""PromptRegressor on the CPU: training split into slices over a checkpoint is the uninterrupted training,
step for step, and a checkpoint refuses to resume for other rows or hyperparameters."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

SETTINGS = dict(max_seconds=600.0, max_steps=3, batch_size=4, eval_every=2, warmup_steps=2)
"""A three-step run (stopped by steps, so the learning-rate schedule does not depend on time), validated before
the first step, after the second and at the end: the best step is chosen across slices."""


@pytest.fixture(scope="module")
def rows():
    """24 records of two tasks, one prefix each (two failures, a prior)."""
    from kernelcast.surrogate.llm.regressor import TrainingRows

    rng = np.random.default_rng(1)
    n = 24
    prefixes = {f"k{i}": f"Triton kernel softmax/v{i}\ndef kernel(x, BLOCK: tl.constexpr): pass {i}" for i in range(2)}
    log_time = rng.normal(0.0, 0.5, n)
    failed = np.zeros(n, dtype=bool)
    failed[[5, 17]] = True
    log_time[failed] = np.nan
    prior = np.stack([np.nan_to_num(log_time) + rng.normal(0.0, 0.2, n), np.full(n, -1.0), np.full(n, -3.0)], axis=1)
    return TrainingRows(
        prefixes=prefixes, prefix_keys=[f"k{i % 2}" for i in range(n)],
        suffixes=[f"BLOCK={16 << (i % 4)} num_warps={1 << (i % 3)}" for i in range(n)], log_time=log_time,
        failed=failed, task=np.arange(n) % 2, noise=np.full(n, 0.01), prior=prior,
    )


@pytest.fixture(scope="module")
def valid():
    """A third of the records, held out to choose the kept step."""
    return np.arange(24) % 3 == 0


def _regressor():
    """A fresh regressor on a freshly loaded base model (adapters are injected into the base in place)."""
    from kernelcast.surrogate.llm.base import load_base_model
    from kernelcast.surrogate.llm.regressor import PromptRegressor

    return PromptRegressor(load_base_model("cpu"), lora_rank=4, head_width=16, max_prefix_tokens=32, device="cpu",
                           seed=0, prior_features=3)


def _weights(regressor) -> dict[str, np.ndarray]:
    from peft import get_peft_model_state_dict

    adapter = {f"adapter.{k}": v for k, v in get_peft_model_state_dict(regressor.model).items()}
    head = {f"head.{k}": v for k, v in regressor.head.state_dict().items()}
    return {k: v.detach().cpu().numpy().copy() for k, v in {**adapter, **head}.items()}


@pytest.fixture(scope="module")
def runs(rows, valid, llm_extra, tmp_path_factory):
    """The same three steps trained in one call and in three one-step slices (a fresh regressor each).

    The uninterrupted call writes its finished state too (a checkpoint without slices), for comparison.
    """
    folder = tmp_path_factory.mktemp("slices")
    checkpoint, whole_checkpoint = folder / "train.pt", folder / "whole.pt"
    whole = _regressor()
    initial = _weights(whole)
    whole_log = whole.fit(rows, valid=valid, checkpoint=whole_checkpoint, **SETTINGS)
    slice_logs, sliced = [], None
    for _ in range(3):
        sliced = _regressor()
        slice_logs.append(sliced.fit(rows, valid=valid, checkpoint=checkpoint, slice_seconds=0.0, **SETTINGS))
    return {"initial": initial, "whole": whole, "whole_log": whole_log, "sliced": sliced, "slice_logs": slice_logs,
            "checkpoint": checkpoint, "whole_checkpoint": whole_checkpoint}


def test_slices_resume_where_the_last_one_stopped(runs):
    logs = runs["slice_logs"]
    assert [log["complete"] for log in logs] == [False, False, True]
    assert [log["steps"] for log in logs] == [1, 2, 3]
    assert [log["slices"] for log in logs] == [1, 2, 3]
    assert [log["candidates_seen"] for log in logs] == [4, 8, 12]
    assert logs[0]["checkpoint"] == str(runs["checkpoint"]) and runs["checkpoint"].is_file()
    assert logs[0]["seconds"] < logs[1]["seconds"] < logs[2]["seconds"]  # training time adds up over slices
    assert not list(runs["checkpoint"].parent.glob("*.partial"))


def _flat(value, prefix=""):
    """The tensors and plain values of a nested checkpoint, by path."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}/{key}").items()}
    if isinstance(value, list | tuple):
        return {k: v for i, item in enumerate(value) for k, v in _flat(item, f"{prefix}/{i}").items()}
    return {prefix: value}


def test_sliced_training_equals_the_uninterrupted_run(runs):
    """Same batches, dropout masks, optimizer moments and kept step: the same final and kept weights."""
    whole, last = runs["whole_log"], runs["slice_logs"][-1]
    assert last["steps"] == whole["steps"] == 3 and last["candidates_seen"] == whole["candidates_seen"]
    assert [h["step"] for h in last["valid_history"]] == [0, 2, 3]
    assert [h["pairwise_accuracy"] for h in last["valid_history"]] == [
        h["pairwise_accuracy"] for h in whole["valid_history"]]
    assert last["kept_step"] == whole["kept_step"]
    assert [h["loss"] for h in last["history"]] == pytest.approx([h["loss"] for h in whole["history"]], rel=1e-6)
    expected, got = _weights(runs["whole"]), _weights(runs["sliced"])
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-6, atol=1e-7, err_msg=name)

    whole_state = torch.load(runs["whole_checkpoint"], weights_only=True)
    sliced_state = torch.load(runs["checkpoint"], weights_only=True)
    trained = {f"adapter.{k}": v.numpy() for k, v in sliced_state["adapter"].items()}
    assert any(not np.array_equal(value, runs["initial"][name]) for name, value in trained.items())  # it trained
    assert whole_state["slices"] == 1 and sliced_state["slices"] == 3
    assert whole_state["complete"] and sliced_state["complete"]
    expected, got = _flat(whole_state), _flat(sliced_state)
    assert got.keys() == expected.keys()
    for path, value in expected.items():
        if path == "/slices" or path.endswith("/seconds"):
            continue  # how many calls, and wall time
        if isinstance(value, torch.Tensor):
            np.testing.assert_allclose(got[path].float().numpy(), value.float().numpy(), rtol=1e-6, atol=1e-7,
                                       err_msg=path)
        elif isinstance(value, float):
            assert got[path] == pytest.approx(value, rel=1e-6, nan_ok=True), path
        else:
            assert got[path] == value, path


def test_a_finished_checkpoint_finishes_again_without_training(runs, rows, valid, tmp_path):
    checkpoint = tmp_path / "train.pt"
    shutil.copyfile(runs["checkpoint"], checkpoint)
    again = _regressor()
    log = again.fit(rows, valid=valid, checkpoint=checkpoint, slice_seconds=0.0, **SETTINGS)
    assert log["complete"] and log["steps"] == 3 and log["candidates_seen"] == 12
    assert log["kept_step"] == runs["whole_log"]["kept_step"]
    expected = _weights(runs["whole"])
    for name, value in _weights(again).items():
        np.testing.assert_allclose(value, expected[name], rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.fixture(scope="module")
def idle_regressor(llm_extra):
    """One regressor for the refused resumes: each is refused before any weight changes."""
    return _regressor()


@pytest.mark.parametrize(("change", "message"), [
    ({"batch_size": 8}, r"other hyperparameters: batch_size 4 in the checkpoint, 8 now\."),
    ({"max_seconds": 900.0}, r"other hyperparameters: max_seconds 600\.0 in the checkpoint, 900\.0 now"),
    ({"learning_rate": 1e-4, "head_learning_rate": 1e-4},
     r"learning_rate 0\.0003 in the checkpoint, 0\.0001 now; head_learning_rate 0\.001 in the checkpoint"),
])
def test_other_hyperparameters_are_refused(runs, rows, valid, idle_regressor, change, message):
    from kernelcast.exceptions import InvalidParameterError

    with pytest.raises(InvalidParameterError, match=message):
        idle_regressor.fit(rows, valid=valid, checkpoint=runs["checkpoint"], **{**SETTINGS, **change})


def test_another_lora_rank_is_refused(runs, rows, valid, llm_extra):
    from kernelcast.exceptions import InvalidParameterError
    from kernelcast.surrogate.llm.base import load_base_model
    from kernelcast.surrogate.llm.regressor import PromptRegressor

    other = PromptRegressor(load_base_model("cpu"), lora_rank=2, head_width=16, max_prefix_tokens=32, device="cpu",
                            seed=0, prior_features=3)
    with pytest.raises(InvalidParameterError, match="other hyperparameters: lora_rank 4 in the checkpoint, 2 now"):
        other.fit(rows, valid=valid, checkpoint=runs["checkpoint"], **SETTINGS)


def test_other_rows_are_refused(runs, rows, valid, idle_regressor):
    from kernelcast.exceptions import InvalidParameterError

    log_time = rows.log_time.copy()
    log_time[0] += 0.5
    with pytest.raises(InvalidParameterError, match=r"other training rows: log_time [0-9a-f]{12} in the checkpoint"):
        idle_regressor.fit(dataclasses.replace(rows, log_time=log_time), valid=valid, checkpoint=runs["checkpoint"],
                           **SETTINGS)
    suffixes = list(rows.suffixes)
    suffixes[3] = "BLOCK=1024 num_warps=8"
    with pytest.raises(InvalidParameterError, match=r"other training rows: suffixes [0-9a-f]{12} in the checkpoint"):
        idle_regressor.fit(dataclasses.replace(rows, suffixes=suffixes), valid=valid, checkpoint=runs["checkpoint"],
                           **SETTINGS)
    with pytest.raises(InvalidParameterError, match=r"other training rows: valid [0-9a-f]{12} in the checkpoint"):
        idle_regressor.fit(rows, valid=~valid, checkpoint=runs["checkpoint"], **SETTINGS)
    prior = rows.prior.copy()
    prior[:, 0] += 0.1
    with pytest.raises(InvalidParameterError, match="other prior forecasts: they differ from these by up to"):
        idle_regressor.fit(dataclasses.replace(rows, prior=prior), valid=valid, checkpoint=runs["checkpoint"],
                           **SETTINGS)


def test_other_targets_and_foreign_files_are_refused(runs, rows, valid, idle_regressor, tmp_path):
    from kernelcast.exceptions import InvalidParameterError

    state = torch.load(runs["checkpoint"], map_location="cpu", weights_only=True)
    state["target_mean"] += 1e-6
    tampered = tmp_path / "tampered.pt"
    torch.save(state, tampered)
    with pytest.raises(InvalidParameterError, match="is for other data: its target_mean is"):
        idle_regressor.fit(rows, valid=valid, checkpoint=tampered, **SETTINGS)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(InvalidParameterError, match="is not a training checkpoint of PromptRegressor.fit"):
        idle_regressor.fit(rows, valid=valid, checkpoint=foreign, **SETTINGS)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(InvalidParameterError, match="Cannot read the training checkpoint"):
        idle_regressor.fit(rows, valid=valid, checkpoint=garbage, **SETTINGS)


def test_a_slice_needs_a_checkpoint(rows, idle_regressor):
    from kernelcast.exceptions import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="slice_seconds=60.0 needs a checkpoint path"):
        idle_regressor.fit(rows, slice_seconds=60.0, **SETTINGS)
