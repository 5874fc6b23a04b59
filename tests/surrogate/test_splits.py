"""Splits never leak: held-out groups stay out of training and calibration; pairs stay within tasks."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from kernelcast.exceptions import InvalidParameterError
from kernelcast.surrogate.evaluation.splits import Holdout, default_kind, make_split, parse_holdout
from kernelcast.surrogate.tasks import TASK_COLUMNS, within_task_pairs

KEYS = ["source_hash", "config_json", "problem_json", "dtype", "device"]


def _keys(frame: pl.DataFrame) -> set[tuple]:
    return set(frame.select(KEYS).iter_rows())


@pytest.fixture(scope="module")
def frame(record_factory) -> pl.DataFrame:
    return record_factory(configs_per_task=30, seed=3)


def test_parse_holdout():
    assert parse_holdout("device=3090") == Holdout("device", "3090")
    assert parse_holdout(" Family = matmul ") == Holdout("family", "matmul")
    with pytest.raises(InvalidParameterError, match="must look like key=VALUE"):
        parse_holdout("device")
    with pytest.raises(InvalidParameterError, match="'holdout key' parameter of evaluate must be one of 'device'"):
        parse_holdout("gpu=3090")
    assert default_kind([parse_holdout("device=x")]) == "device"
    assert default_kind([parse_holdout("shape=4096")]) == "shapes"
    assert default_kind([]) == "random"


def test_holdout_matches_substrings_case_insensitively(frame):
    mask = parse_holdout("device=rtx 3090").mask(frame)
    assert mask.any()
    assert set(frame.filter(pl.Series(mask))["device"]) == {"NVIDIA GeForce RTX 3090"}


@pytest.mark.parametrize(("kind", "holdouts", "column"), [
    ("device", ["device=3090"], "device"),
    ("device", [], "device"),
    ("shapes", ["problem=\"M\":4096"], "problem_json"),
    ("shapes", [], "problem_json"),
])
@pytest.mark.parametrize("calibration", ["auto", "group", "random", "cross"])
def test_group_splits_never_leak(frame, kind, holdouts, column, calibration):
    split = make_split(frame, kind, holdouts, seed=1, calibration=calibration)
    train, calib, test = split.train, split.calibration, split.test
    assert test.height
    assert train.height
    assert not (_keys(train) & _keys(test))
    assert not (_keys(calib) & _keys(test))
    assert not (_keys(train) & _keys(calib))
    # Every group with a test record is absent from training and calibration.
    group_cols = ["device"] if kind == "device" else ["family", "problem_json"]
    held = set(test.select(group_cols).iter_rows())
    assert not held & set(train.select(group_cols).iter_rows())
    assert not held & set(calib.select(group_cols).iter_rows())
    if split.calibration_mode == "cross":
        assert calib.height == 0
        assert len(split.train_groups) == train.height
        assert len(set(split.train_groups)) >= 2
    else:
        assert calib.height
    if holdouts and kind == "device":
        assert set(test[column]) == {"NVIDIA GeForce RTX 3090"}


def test_random_split_is_stratified_by_task_and_pairs_stay_within_tasks(frame):
    split = make_split(frame, "random", seed=2)
    assert not (_keys(split.train) & _keys(split.test))
    tasks = frame.select(TASK_COLUMNS).unique().height
    assert split.test.select(TASK_COLUMNS).unique().height == tasks
    pairs = within_task_pairs(split.test)
    a = split.test[pairs.a].select(TASK_COLUMNS)
    b = split.test[pairs.b].select(TASK_COLUMNS)
    assert a.equals(b)
    with pytest.raises(InvalidParameterError, match="random split takes no --holdout"):
        make_split(frame, "random", ["device=3090"])


def test_split_errors_name_the_problem(frame):
    with pytest.raises(InvalidParameterError, match="No record matches the holdout device=a100"):
        make_split(frame, "device", ["device=a100"])
    with pytest.raises(InvalidParameterError, match="leaves no 'device' group for training"):
        make_split(frame, "device", ["device=nvidia"])
    with pytest.raises(InvalidParameterError, match="'split' parameter of evaluate must be one of"):
        make_split(frame, "gpus")


def test_holdouts_with_different_keys_must_all_match(frame):
    split = make_split(frame, "device", ["device=3090", "problem=\"M\":1024,"], seed=0)
    assert set(split.test["device"]) == {"NVIDIA GeForce RTX 3090"}
    assert split.test["problem_json"].str.contains('"M":1024,').all()
    assert "NVIDIA GeForce RTX 3090" not in set(split.train["device"])  # the whole device is held out


def test_split_is_reproducible(frame):
    a = make_split(frame, "device", seed=4)
    b = make_split(frame, "device", seed=4)
    assert a.describe() == b.describe()
    assert np.array_equal(a.train_groups, b.train_groups)


def test_variants_split_holds_out_one_source_variant_and_keeps_its_siblings(frame):
    other = frame.head(200).with_columns(pl.lit("persistent").alias("variant"), pl.lit("synthetic0000001")
                                         .alias("source_hash"))
    both = pl.concat([frame, other])
    assert default_kind([parse_holdout("variant=persistent")]) == "variants"
    assert default_kind([parse_holdout("family=matmul")]) == "families"
    split = make_split(both, "variants", ["variant=persistent"], seed=0, calibration="random")
    assert set(split.test["variant"]) == {"persistent"}
    assert set(split.train["variant"]) == {"blocked"}  # the sibling variant of the same family trains
    assert not (_keys(split.train) & _keys(split.test))
    assert split.test_groups == ("matmul | persistent",)
