"""Importers: read measurements made by other tuners and benchmarks as kernelcast records.

Each importer maps one external format onto :class:`~kernelcast.measurement.records.Record` and says in its
module docstring how every field is filled. None guesses silently: a file it cannot read raises
:class:`~kernelcast.exceptions.InvalidParameterError` naming the file and the field.
"""

from kernelcast.datasets.importers._reading import sniff_format
from kernelcast.datasets.importers.kernel_tuner import import_kernel_tuner, read_cache
from kernelcast.datasets.importers.kernelbench import import_kernelbench, read_kernelbench_file
from kernelcast.datasets.importers.ktt import read_ktt

__all__ = [
    "import_kernel_tuner",
    "import_kernelbench",
    "read_cache",
    "read_kernelbench_file",
    "read_ktt",
    "sniff_format",
]
