"""FrameSurrogate: the shared base of surrogates that read prompts built from the candidate frame itself.

The tabular surrogates learn from feature matrices (:meth:`CalibratedSurrogate._fit_models`); a language
model reads each candidate's source text and configuration instead. This base keeps everything else of
:class:`~kernelcast.surrogate._calibrated.CalibratedSurrogate` (validation, task levels, training identity,
calibration, decisions, persistence) and hands subclasses the record frame and the source library.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import polars as pl

from kernelcast.exceptions import NotFittedError
from kernelcast.surrogate._calibrated import CalibratedSurrogate, RawForecast


def source_mapping(sources: Mapping[str, str] | pl.DataFrame | None) -> dict[str, str]:
    """Source texts by ``source_hash`` from a mapping or a frame with ``source_hash`` and ``source_text``."""
    if sources is None:
        return {}
    if isinstance(sources, pl.DataFrame):
        return {str(h): str(t) for h, t in sources.select("source_hash", "source_text").drop_nulls().iter_rows()}
    return {str(h): str(t) for h, t in sources.items() if t is not None}


class FrameSurrogate(CalibratedSurrogate):
    """A calibrated surrogate whose models read the record frame (see the module docstring).

    Subclasses implement :meth:`_fit_frame` and :meth:`_predict_raw` (from a candidate frame), and name the
    attribute that marks them fitted in :attr:`fitted_attribute`.
    """

    fitted_attribute: ClassVar[str] = "sources_"
    """Learned attribute whose presence means the surrogate is fitted."""

    @abc.abstractmethod
    def _fit_frame(self, records: pl.DataFrame, log_time: np.ndarray, failed: np.ndarray) -> None:
        """Fit on ``records``: ``log_time`` (shape (n,), centred with ``centering``, NaN where ``failed``).

        :attr:`sources_` already holds the source library when this is called.
        """

    def _check_fitted(self) -> None:
        if not hasattr(self, self.fitted_attribute):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with a record frame before "
                "forecasting."
            )

    def fit(
        self,
        records: pl.DataFrame,
        y: None = None,
        *,
        sources: Mapping[str, str] | pl.DataFrame | None = None,
        data_path: Any = None,
    ) -> FrameSurrogate:
        """Learn from a record frame (failures included).

        Parameters
        ----------
        records : polars.DataFrame
            Records in the store's row layout.
        y : None
            Unused: the target is ``ln(time_ms)`` of the records.
        sources : mapping or DataFrame, optional
            Source texts by ``source_hash`` (``Store.sources()``); all of them enter the source library,
            also those of variants without training records (a source is known before it is measured).
        data_path : path-like, optional
            The dataset the records came from.

        Returns
        -------
        self
        """
        self._fit_context = (records, sources)
        try:
            super().fit(records, y, sources=sources, data_path=data_path)
        finally:
            del self._fit_context
        return self

    def _fit_models(self, X_ok: np.ndarray, y_ok: np.ndarray, X_all: np.ndarray, failed: np.ndarray,
                    sample_weight: np.ndarray | None = None, groups: np.ndarray | None = None) -> None:
        records, sources = self._fit_context
        self.sources_ = source_mapping(sources)
        if "source_text" in records.columns:
            self.sources_.update(source_mapping(records.select("source_hash", "source_text")))
        target = np.full(records.height, np.nan)
        target[~failed] = y_ok
        self._fit_frame(records, target, np.asarray(failed, dtype=bool))

    def add_sources(self, sources: Mapping[str, str] | pl.DataFrame) -> FrameSurrogate:
        """Add source texts by ``source_hash`` to the library (e.g. a new variant during a search); return self."""
        self._check_fitted()
        self.sources_.update(source_mapping(sources))
        return self

    def _raw_forecast(self, X: np.ndarray, X_fail: np.ndarray) -> RawForecast:
        raise NotImplementedError(f"{type(self).__name__} forecasts from candidate frames (_predict_raw).")
