"""Per-date feature baselines (random forest on lagged, gap-filled observations).

The random-forest peer users pick for pixel time series: at every date it sees the last valid
observation at lags 0, 30, 60, ... days (causal, like the transformer's prefix) plus the season.
"""

from __future__ import annotations

import logging

import numpy as np

from eokit.timeseries.data import SeriesData

logger = logging.getLogger(__name__)


def lagged_features(data: SeriesData, *, n_lags: int = 12, lag_days: int = 30) -> np.ndarray:
    """Causal per-date features (N, T, n_lags * C + 2).

    Feature block ``j`` holds the last valid observation on or before ``date_t - j * lag_days``
    (NaN when there is none); the last two features are sin/cos of the date's day of year.

    Args:
        data: Series with shared dates (raster layouts) or per-sample day of year.
        n_lags: Number of lags.
        lag_days: Spacing of the lags in days.
    """
    n, t, c = data.series.shape
    valid = data.valid
    index = np.where(valid, np.arange(t)[None], -1)
    last_valid = np.maximum.accumulate(index, axis=1)  # (N, T)
    if data.dates is not None:
        days = (data.dates.astype("datetime64[D]") - data.dates[0].astype("datetime64[D]")
                ).astype(np.int64)
        day_grid = np.broadcast_to(days[None], (n, t))
    else:
        # Per-sample day of year, unwrapped across year ends.
        doy = np.asarray(data.doy, dtype=np.float64)
        steps = np.diff(doy, axis=1) % 365.25
        day_grid = np.concatenate([np.zeros((n, 1)), np.cumsum(steps, axis=1)], axis=1)
    features = np.full((n, t, n_lags * c + 2), np.nan, dtype=np.float32)
    rows = np.arange(n)[:, None]
    for j in range(n_lags):
        target_day = day_grid - j * lag_days
        # Latest date index with day <= target_day, per pixel.
        at = np.empty((n, t), dtype=np.int64)
        for i in range(n) if data.dates is None else [None]:
            if i is None:
                at[:] = np.searchsorted(day_grid[0], target_day[0], side="right")[None] - 1
            else:
                at[i] = np.searchsorted(day_grid[i], target_day[i], side="right") - 1
        source = np.where(at >= 0, last_valid[rows, np.clip(at, 0, None)], -1)
        values = data.series[rows, np.clip(source, 0, None)]  # (N, T, C)
        values = np.where((source >= 0)[..., None], values, np.nan)
        features[:, :, j * c:(j + 1) * c] = values
    angle = 2 * np.pi * np.asarray(data.doy, dtype=np.float32) / 365.25
    features[:, :, -2] = np.sin(angle)
    features[:, :, -1] = np.cos(angle)
    return features


def random_forest(n_estimators: int = 200, seed: int = 0, *, regression: bool = False,
                  class_weight: str | None = "balanced") -> object:
    """A scikit-learn random forest (NaN-aware) with the settings used by the benchmarks."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    if regression:
        return RandomForestRegressor(n_estimators=n_estimators, random_state=seed, n_jobs=2,
                                     min_samples_leaf=2)
    return RandomForestClassifier(n_estimators=n_estimators, random_state=seed, n_jobs=2,
                                  class_weight=class_weight, min_samples_leaf=2)


def linear_model(*, regression: bool = True, seed: int = 0) -> object:
    """Ridge regression (or L2 logistic regression) on standardised, median-imputed inputs.

    The cheapest honest peer for a learned model: a pipeline of scikit-learn's
    ``SimpleImputer(median)``, ``StandardScaler`` and ``RidgeCV`` (regularisation picked by
    efficient leave-one-out over 13 strengths from 1e-3 to 1e3) or ``LogisticRegressionCV``
    (5-fold, class-balanced).
    """
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegressionCV, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    strengths = np.logspace(-3, 3, 13)
    estimator = (RidgeCV(alphas=strengths) if regression else
                 LogisticRegressionCV(Cs=1.0 / strengths, class_weight="balanced",
                                      max_iter=2000, random_state=seed))
    return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), estimator)
