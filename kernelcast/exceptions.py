"""The error tree shared by every kernelcast subpackage.

Messages follow scikit-learn's form: "The 'budget' parameter of search must be a positive int. Got -3
instead." An unknown option lists the allowed ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class KernelcastError(Exception):
    """Root of every error raised on purpose by kernelcast."""


class InvalidParameterError(KernelcastError, ValueError):
    """A user-supplied value is malformed or not one of the allowed ones."""


class NotFittedError(KernelcastError, ValueError, AttributeError):
    """An estimator was used before ``fit`` (or before ``calibrate`` where that is required)."""


class SchemaVersionError(KernelcastError):
    """Data or a model was written with a schema version this code cannot read."""

    def __init__(self, what: str, found: int | str, supported: int | str) -> None:
        self.what = what
        self.found = found
        self.supported = supported
        super().__init__(
            f"{what} was written with schema version {found}, but this kernelcast reads at most version "
            f"{supported}. Upgrade kernelcast to read it."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.what, self.found, self.supported))


def invalid_choice(param: str, owner: str, got: object, allowed: Iterable[object]) -> InvalidParameterError:
    """Build the error for a value that is not one of ``allowed``.

    Parameters
    ----------
    param : str
        Name of the parameter, e.g. ``"family"``.
    owner : str
        What the parameter belongs to, e.g. ``"measure"``.
    got : object
        The offending value.
    allowed : iterable
        The values that would have been accepted.
    """
    allowed_text = ", ".join(repr(a) for a in allowed)
    return InvalidParameterError(
        f"The {param!r} parameter of {owner} must be one of {allowed_text}. Got {got!r} instead."
    )
