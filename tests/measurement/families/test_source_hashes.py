"""Pin the source hash of every built-in (family, variant).

The hash is the dataset identity of a variant: every record in the shipped datasets/kernelcast (measured on a
GPU) is keyed by ``Family.source_hash(variant)``, the hash of the exact text of the variant's kernels and
launchers. A refactor that changes one of these texts, even by whitespace, orphans that variant's
measurements. Change a hash here only together with re-measuring (or re-keying) the records it names.
"""

from __future__ import annotations

import pytest

from kernelcast.measurement.families import BUILTIN_FAMILIES, get_family

SOURCE_HASHES: dict[tuple[str, str], str] = {
    ("matmul", "blocked"): "8bb992012508374f",
    ("matmul", "splitk"): "9dd56ae9a23796a7",
    ("matmul", "persistent"): "91d33c673af4c333",
    ("softmax", "single_block"): "d84866313627b48b",
    ("softmax", "online"): "ff9fb3f830081189",
    ("softmax", "two_pass"): "9bb79362c1bceeca",
    ("layernorm", "single_block"): "76583fe9a4dad127",
    ("layernorm", "looped"): "422669f51632adb6",
    ("layernorm", "welford"): "aa1ee4e9f10556be",
    ("rmsnorm", "single_block"): "e25464a171a296f2",
    ("rmsnorm", "looped"): "b595c7c864d68904",
    ("bias_gelu", "tiled"): "0ce8559de0ae3b9e",
    ("bias_gelu", "flat"): "8520db6e2873291c",
    ("rowsum", "single_block"): "a13e2e456d88040a",
    ("rowsum", "looped"): "f70f3fab5a560cd3",
    ("rowsum", "split"): "3b9883e713f481f0",
    ("attention", "fa2"): "77e0d4544c458ed0",
    ("attention", "two_pass"): "bd1d2aadeb4d1845",
    ("attention", "split_kv"): "667c4b114d746718",
    ("transpose", "tiled"): "8059e9f9b9a07b48",
    ("transpose", "naive"): "5f18e232bf60a0ba",
}


def test_every_builtin_variant_is_pinned():
    variants = {(name, v) for name in BUILTIN_FAMILIES for v in get_family(name).variants}
    assert variants == set(SOURCE_HASHES)


@pytest.mark.parametrize(("family", "variant"), list(SOURCE_HASHES))
def test_source_hash_is_unchanged(family, variant):
    assert get_family(family).source_hash(variant) == SOURCE_HASHES[family, variant]
