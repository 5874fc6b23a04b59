"""Print status counts per family of a store directory with pyarrow only (for GPU machines without polars)."""

import collections
import glob
import sys

import pyarrow.parquet as pq

files = glob.glob(f"{sys.argv[1]}/records/part-*.parquet")
counts: dict = collections.defaultdict(collections.Counter)
errors: dict = {}
for f in files:
    t = pq.read_table(f, columns=["family", "variant", "status", "error"]).to_pylist()
    for row in t:
        counts[f"{row['family']}/{row['variant']}"][row["status"]] += 1
        if row["status"] not in ("ok", "invalid_config") and row["error"]:
            errors.setdefault((row["family"], row["variant"], row["status"]), row["error"][:300])
for key in sorted(counts):
    print(key, dict(counts[key]))
for key, err in errors.items():
    print("ERROR", key, err.replace("\n", " | "))
