"""kernelcast: surrogate-screened GPU kernel tuning.

The subpackages follow the data flow: ``kernelcast.measurement`` (time Triton kernels safely) ->
``kernelcast.datasets`` (measured records, Parquet) -> ``kernelcast.surrogate`` (forecasters with calibrated
confidence) -> ``kernelcast.models`` (trained artifacts) -> ``kernelcast.search`` (budgeted Optuna search).
"""

from kernelcast.exceptions import (
    InvalidParameterError,
    KernelcastError,
    NotFittedError,
    SchemaVersionError,
)

__version__ = "0.1.0"

__all__ = [
    "InvalidParameterError",
    "KernelcastError",
    "NotFittedError",
    "SchemaVersionError",
    "__version__",
]
