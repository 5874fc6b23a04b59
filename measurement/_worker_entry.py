"""Entry point of a worker process: ``python -m kernelcast.measurement._worker_entry FD INITIALIZER``.

Kept apart from :mod:`kernelcast.measurement.worker` so running it does not import that module twice.
"""

import sys

from kernelcast.measurement.worker import _worker_main

if __name__ == "__main__":
    _worker_main(int(sys.argv[1]), sys.argv[2] or None)
