"""The urban density-gradient pipeline on arrays: paper steps 1-9 and the structure call."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eokit.core.errors import DataError, InputError
from eokit.urban import centres as centres_mod
from eokit.urban.fuse import edge_density, fuse, sar_unit
from eokit.urban.profile import Profile, Trend, density_profile, fit_trend
from eokit.urban.regions import Region, kmeans_regions, steep_uniform_notes
from eokit.urban.segment import (
    CENTRE,
    CLASS_NAMES,
    NODATA,
    TERRAIN,
    URBAN,
    WATER,
    MixtureFit,
    classify,
    clean_urban_mask,
    decompose_histogram,
    final_classes,
)

logger = logging.getLogger(__name__)

#: Default requested number of regions in the K-means step (published: 1..3, prefer 3).
MAX_REGIONS = 3
#: A separated centre core counts as a centre of its own when it has at least this share of the
#: largest core's area; smaller ones are reported as sub-centres.
CENTRE_MIN_SHARE = 0.2
#: The city is polycentric when a second centre has at least this share of the largest one's
#: area (comparable centres); one dominant core with smaller sub-centres is monocentric.
POLYCENTRIC_SHARE = 0.5
#: The profile alpha (published) and the Clark alpha (geo mode) are different quantities.
ALPHA_DEFINITIONS = {
    "alpha_per_km": "published profile alpha: OLS slope of the mean fused value C against "
    "distance through the profile minima, in C per km (negative = density falls outwards; it "
    "scales with the rendering's contrast, not a decay rate)",
    "clark.alpha_per_km": "Clark alpha (geo mode): rate of exponential decay D(r) = D0 exp(-alpha "
    "r) of C above the rural baseline, per km (positive = density falls outwards; comparable "
    "with the urban-economics literature)",
}


def significant(value: float | None, digits: int = 3) -> float | None:
    """``value`` rounded to ``digits`` significant digits (None and non-finite become None)."""
    if value is None or not math.isfinite(value):
        return None
    if value == 0:
        return 0.0
    return round(float(value), digits - 1 - int(math.floor(math.log10(abs(value)))))


def km_decimals(pixel_size_m: float) -> int:
    """Decimals of a distance in km that the pixel size resolves (10 m -> 2, 5 m -> 3)."""
    return max(0, math.ceil(-math.log10(pixel_size_m / 1000.0) - 1e-9))


@dataclass
class ClarkFit:
    """Clark exponential D(r) = D0 exp(-alpha r) fitted log-linearly (weights = pixels per bin).

    alpha_per_km > 0 means density falls with distance; CI from a bootstrap over bins.
    """

    alpha_per_km: float
    d0: float
    ci_low: float
    ci_high: float
    baseline: float
    n_bins: int
    n_boot: int
    r2: float
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly."""
        return {
            "alpha_per_km": significant(self.alpha_per_km),
            "d0": significant(self.d0),
            "ci95": [significant(self.ci_low), significant(self.ci_high)],
            "baseline": significant(self.baseline, 4),
            "n_bins": self.n_bins,
            "n_boot": self.n_boot,
            "r2": significant(self.r2),
            "note": self.note,
        }


@dataclass
class UrbanResult:
    """Everything one city analysis produces (arrays in memory, metrics as plain values)."""

    mode: str
    pixel_size_m: float
    edge: np.ndarray | None
    sar01: np.ndarray | None
    fused: np.ndarray
    classes: np.ndarray
    urban_mask: np.ndarray
    centres: np.ndarray
    class_fit: MixtureFit
    centre_fit: MixtureFit
    water_threshold: float
    urban_threshold: float
    centre_threshold: float
    profile: Profile
    trend: Trend
    regions: list[Region]
    regions_k: int
    cluster_labels: np.ndarray
    clusters: list[centres_mod.CentreCluster]
    structure: dict[str, Any]
    clark: ClarkFit | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    #: Failed assumptions of the method (also in ``notes`` and logged); empty when all hold.
    warnings: list[str] = field(default_factory=list)

    @property
    def distance_km(self) -> np.ndarray:
        """Bin distances in km."""
        return self.profile.distance_px * self.pixel_size_m / 1000.0

    def metrics(self) -> dict[str, Any]:
        """The metrics JSON content, rounded to the digits the method resolves.

        alpha and LD keep 3 significant digits (their standard error is rarely below 1 %),
        distances the decimals the pixel size resolves, fused values (C in [0, 2]) 3 decimals.
        """
        valid = self.classes != NODATA
        n_valid = max(int(valid.sum()), 1)
        km = km_decimals(self.pixel_size_m)
        distance = self.distance_km

        def dist(value: float) -> float | None:
            return round(float(value), km) if math.isfinite(value) else None

        regions = []
        for region in self.regions:
            entry = region.as_dict(distance, self.trend.residuals, self.profile.mean)
            for key in ("start_km", "end_km"):
                entry[key] = dist(float(entry[key]))  # type: ignore[arg-type]
            for key in ("residual_std", "residual_mean", "gradient_per_km"):
                entry[key] = significant(float(entry[key]))  # type: ignore[arg-type]
            regions.append(entry)
        out: dict[str, Any] = {
            "mode": self.mode,
            "pixel_size_m": self.pixel_size_m,
            "alpha_per_km": significant(self.trend.alpha_per_km),
            "alpha_std_err_per_km": significant(self.trend.std_err_per_km, 2),
            "alpha_sign_convention": "slope of mean fused C per km (negative = density falls)",
            "alpha_definitions": dict(ALPHA_DEFINITIONS),
            "trend_intercept": round(self.trend.intercept, 3),
            "trend_method": self.trend.method,
            "ld_km": significant(self.trend.ld_km),
            "rho_target": round(self.trend.target, 3),
            "n_minima": int(self.trend.minima.size),
            "minima_km": [dist(distance[i]) for i in self.trend.minima],
            "profile_peaks_km": [dist(distance[i]) for i in self.trend.peaks],
            "thresholds": {
                "water": None
                if not math.isfinite(self.water_threshold)
                else round(self.water_threshold, 3),
                "urban": round(self.urban_threshold, 3),
                "centre": round(self.centre_threshold, 3),
                "class_fit": self.class_fit.as_dict(),
                "centre_fit": self.centre_fit.as_dict(),
            },
            "fractions": {
                name: round(float((self.classes == code).sum()) / n_valid, 4)
                for code, name in enumerate(CLASS_NAMES)
                if code != NODATA
            },
            "urban_area_km2": significant(
                float(self.urban_mask.sum()) * self.pixel_size_m**2 / 1e6, 4
            ),
            "centre_area_km2": significant(
                float(self.centres.sum()) * self.pixel_size_m**2 / 1e6, 4
            ),
            "n_bins": len(self.profile),
            "max_distance_km": dist(distance[-1]),
            "regions_k": self.regions_k,
            "regions": regions,
            "structure": self.structure,
            "assumptions_hold": not self.warnings,
            "warnings": list(self.warnings),
            "notes": list(self.notes),
        }
        if self.clark is not None:
            out["clark"] = self.clark.as_dict()
        out.update(self.extra)
        return out


def class_thresholds(
    fused: np.ndarray, valid: np.ndarray | None, *, closed_form: bool
) -> MixtureFit:
    """Step 3: 3-Gaussian decomposition of the fused histogram; tau_water, tau_urban."""
    values = fused if valid is None else fused[valid]
    fit = decompose_histogram(values, 3, closed_form=closed_form, em=closed_form)
    if len(fit.thresholds) < 2:
        raise DataError(
            "could not find water/urban thresholds in the fused histogram (flat image?)"
        )
    return fit


def clark_fit(
    profile: Profile,
    pixel_size_m: float,
    baseline: float,
    *,
    n_boot: int = 500,
    seed: int = 0,
    min_count: int = 10,
) -> ClarkFit:
    """Clark's exponential law on the density above the rural baseline, weighted log-linear fit.

    D(r) = mean C(r) - baseline (baseline = mean of the terrain Gaussian); bins with D > 0 and at
    least ``min_count`` pixels; weighted least squares of log D on r (km) with weights = pixel
    counts; 95 % CI from a bootstrap resampling bins with replacement.
    """
    r_km = profile.distance_px * pixel_size_m / 1000.0
    d = profile.mean - baseline
    keep = (d > 0) & (profile.count >= min_count)
    note = ""
    if keep.sum() < 3:
        return ClarkFit(
            math.nan,
            math.nan,
            math.nan,
            math.nan,
            baseline,
            int(keep.sum()),
            0,
            math.nan,
            "fewer than 3 bins above the rural baseline; no Clark fit",
        )
    x, y, w = r_km[keep], np.log(d[keep]), profile.count[keep].astype(np.float64)

    def wls(xs: np.ndarray, ys: np.ndarray, ws: np.ndarray) -> tuple[float, float]:
        xm = np.average(xs, weights=ws)
        ym = np.average(ys, weights=ws)
        sxx = np.sum(ws * (xs - xm) ** 2)
        if sxx <= 0:
            return math.nan, math.nan
        slope = np.sum(ws * (xs - xm) * (ys - ym)) / sxx
        return float(slope), float(ym - slope * xm)

    slope, icpt = wls(x, y, w)
    pred = icpt + slope * x
    ss_res = np.sum(w * (y - pred) ** 2)
    ss_tot = np.sum(w * (y - np.average(y, weights=w)) ** 2)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, x.size, x.size)
        s, _ = wls(x[idx], y[idx], w[idx])
        if math.isfinite(s):
            boots.append(-s)
    lo, hi = np.percentile(boots, [2.5, 97.5]) if boots else (math.nan, math.nan)
    if keep.sum() < keep.size:
        note = f"{int(keep.size - keep.sum())} bins at or below the baseline (or sparse) left out"
    return ClarkFit(
        alpha_per_km=-slope,
        d0=float(np.exp(icpt)),
        ci_low=float(lo),
        ci_high=float(hi),
        baseline=float(baseline),
        n_bins=int(keep.sum()),
        n_boot=len(boots),
        r2=float(1 - ss_res / ss_tot) if ss_tot > 0 else math.nan,
        note=note,
    )


def structure_call(
    clusters: list[centres_mod.CentreCluster],
    trend: Trend,
    profile: Profile,
    pixel_size_m: float,
    *,
    min_share: float = CENTRE_MIN_SHARE,
    polycentric_share: float = POLYCENTRIC_SHARE,
) -> dict[str, Any]:
    """Monocentric vs polycentric from separated centre cores and profile peaks, explained.

    The published method makes this call by reading the profile and the centre map; here it is a
    rule. A core counts as a centre when its area is at least ``min_share`` of the largest one's
    (specks of bright industry do not make a city polycentric). The city is polycentric when a
    second centre has at least ``polycentric_share`` of the largest one's area; one dominant core
    with smaller centres is monocentric with sub-centres. Profile peaks (local maxima of the mean
    profile away from the centre) are reported as supporting evidence.
    """
    largest = max((c.area_px for c in clusters), default=0)
    major = [c for c in clusters if c.area_px >= min_share * largest]
    comparable = [c for c in major if c.area_px >= polycentric_share * largest]
    distance_km = profile.distance_px * pixel_size_m / 1000.0
    peaks_km = [float(distance_km[i]) for i in trend.peaks]
    n = len(major)
    call = "polycentric" if len(comparable) >= 2 else "monocentric"
    spacing = ""
    if n >= 2:
        pts = np.array([(c.row, c.col) for c in major])
        dists = np.hypot(*(pts[:, None, :] - pts[None, :, :]).transpose(2, 0, 1))
        nearest = np.where(np.eye(n, dtype=bool), np.inf, dists).min(axis=1)
        spacing = f", nearest-neighbour spacing {np.median(nearest) * pixel_size_m / 1000:.2f} km"
    if call == "polycentric":
        head = (
            f"polycentric: {len(comparable)} centres of comparable size (at least "
            f"{polycentric_share:.0%} of the largest one's area)"
        )
    elif n >= 2:
        shares = ", ".join(f"{c.area_px / largest:.0%}" for c in major[1:4])
        head = (
            f"monocentric: one dominant centre and {n - 1} sub-centre(s) of {shares} of its "
            f"area (below the {polycentric_share:.0%} needed for a second centre)"
        )
    else:
        head = "monocentric: one separated centre"
    explanation = (
        f"{head}; {n} centre core(s) of at least {min_share:.0%} of the largest one's area "
        f"({len(clusters)} core(s) in total{spacing}); "
        f"{len(peaks_km)} secondary peak(s) in the mean profile"
        + (f" at {', '.join(f'{p:.2f}' for p in peaks_km[:5])} km" if peaks_km else "")
        + (" (sub-centres along the gradient)" if peaks_km and call == "monocentric" else "")
    )
    return {
        "call": call,
        "n_centres": n,
        "n_comparable_centres": len(comparable),
        "n_clusters_total": len(clusters),
        "cluster_areas_px": [c.area_px for c in major],
        "profile_peaks_km": [round(p, km_decimals(pixel_size_m)) for p in peaks_km],
        "explanation": explanation,
    }


def assumption_warnings(result: UrbanResult) -> list[str]:
    """Where the results contradict the method's assumptions (each becomes a warning).

    The procedure assumes density falls with distance from the centres, a target level reached
    at a positive distance, and three well-separated classes with a brighter centre subset; when
    one of these fails the numbers are still the procedure's, but they do not mean what the
    method says they mean.
    """
    warnings: list[str] = []
    trend, km = result.trend, result.distance_km
    alpha = trend.alpha_per_km
    where = ", ".join(f"{km[i]:.2f}" for i in trend.minima[:6])
    if math.isfinite(alpha) and alpha >= 0:
        warnings.append(
            f"wrong sign: the profile alpha is {alpha:+.3g} C per km, so the trend through the "
            f"profile minima (at {where} km) rises with distance from the centres; the method "
            "assumes density falls outwards"
        )
    if math.isfinite(trend.ld_km) and trend.ld_km < 0:
        warnings.append(
            f"negative LD ({trend.ld_km:.3g} km): the trend reaches the target level "
            f"(min Q1 {trend.target:.3g}) only behind the centre (intercept {trend.intercept:.3g},"
            f" slope {alpha:+.3g} C per km); a negative distance has no meaning"
        )
    elif not math.isfinite(trend.ld_km):
        warnings.append("LD is undefined: the trend is flat")
    if result.centre_threshold <= result.urban_threshold:
        warnings.append(
            f"degenerate thresholds: the centre threshold ({result.centre_threshold:.3f}) is not "
            f"above the urban one ({result.urban_threshold:.3f}), so every urban pixel is a centre"
        )
    if math.isfinite(result.water_threshold) and result.water_threshold >= result.urban_threshold:
        warnings.append(
            f"degenerate thresholds: the water threshold ({result.water_threshold:.3f}) is not "
            f"below the urban one ({result.urban_threshold:.3f})"
        )
    urban_px = max(int(result.urban_mask.sum()), 1)
    centre_share = float(result.centres.sum()) / urban_px
    if centre_share > 0.5:
        warnings.append(
            f"degenerate thresholds: centre pixels cover {centre_share:.0%} of the urban area"
        )
    valid = result.classes != NODATA
    urban_share = float(result.urban_mask[valid].sum()) / max(int(valid.sum()), 1)
    if urban_share > 0.6:
        warnings.append(
            f"degenerate thresholds: the urban class covers {urban_share:.0%} of the scene"
        )
    if len(result.profile) < 10:
        warnings.append(
            f"the profile spans only {len(result.profile)} distance bins "
            f"({km[-1] * 1000:.0f} m): alpha and LD are not meaningful"
        )
    warnings += steep_uniform_notes(result.regions, km, result.profile.mean, trend.residuals)
    clark = result.clark
    if clark is not None and math.isfinite(clark.alpha_per_km) and clark.alpha_per_km <= 0:
        warnings.append(
            f"wrong sign: the Clark alpha is {clark.alpha_per_km:+.3g} per km (density above the "
            "rural baseline does not decay outwards)"
        )
    return warnings


def record_warnings(result: UrbanResult) -> None:
    """Check the assumptions; log each failure and keep it in ``warnings`` and ``notes``."""
    result.warnings = assumption_warnings(result)
    for warning in result.warnings:
        logger.warning("%s", warning)
        result.notes.append(f"assumption failed: {warning}")
    ld, extent = result.trend.ld_km, float(result.distance_km[-1])
    if math.isfinite(ld) and ld > extent:
        # the usual case (the target is the lowest Q1 of any bin): worth knowing, not a failure
        note = (
            f"LD {ld:.3g} km lies beyond the profile's extent ({extent:.3g} km): an extrapolation "
            "of the trend"
        )
        logger.info("%s", note)
        result.notes.append(note)


def run_pipeline(
    fused: np.ndarray,
    *,
    pixel_size_m: float,
    mode: str,
    valid: np.ndarray | None = None,
    edge: np.ndarray | None = None,
    sar01: np.ndarray | None = None,
    closed_form: bool = False,
    min_urban_area_px: int = 100,
    merge_distance_px: int = 0,
    clark: bool = False,
    n_boot: int = 500,
    seed: int = 0,
    water_mask: np.ndarray | None = None,
    centre_smooth_m: float = 50.0,
    centre_merge_m: float = 250.0,
    centre_min_share: float = CENTRE_MIN_SHARE,
    check: bool = True,
) -> UrbanResult:
    """Steps 3-9 on a fused image C (H, W) in [0, 2]; optional nodata mask ``valid``.

    With ``water_mask`` (geo mode: water from SAR backscatter), the class thresholds come from a
    2-component fit of the land pixels (terrain / urban) instead of 3 components of all pixels.
    The distance profile uses every centre pixel (published); the mono/polycentric call counts
    compact centre cores (:func:`eokit.urban.centres.compact_centres`; ``merge_distance_px`` > 0
    merges the raw centre pixels instead). ``check`` records failed assumptions
    (:func:`record_warnings`); a caller that adds results afterwards checks itself.
    """
    if pixel_size_m is None:
        raise InputError("is required (the images carry no georeference)", parameter="pixel_size_m")
    if not (pixel_size_m > 0 and math.isfinite(pixel_size_m)):
        raise InputError(f"must be a positive number, got {pixel_size_m}", parameter="pixel_size_m")
    notes: list[str] = []
    if water_mask is None:
        class_fit = class_thresholds(fused, valid, closed_form=closed_form)
        water_t, urban_t = class_fit.thresholds[0], class_fit.thresholds[1]
        classes = classify(fused, water_t, urban_t)
    else:
        land = ~water_mask if valid is None else (~water_mask & valid)
        if not land.any():
            raise DataError("no land pixels: the scene is all water or nodata")
        class_fit = decompose_histogram(fused[land], 2, closed_form=True, em=closed_form, seed=seed)
        if not class_fit.thresholds:
            raise DataError("could not split land into terrain and urban (flat fused signal?)")
        water_t, urban_t = math.nan, class_fit.thresholds[0]
        classes = classify(fused, -math.inf, urban_t)
        classes[water_mask] = WATER
    if class_fit.note:
        notes.append(f"class thresholds: {class_fit.note}")
    raw_urban = classes == URBAN
    if water_mask is not None:
        raw_urban &= ~water_mask
    if valid is not None:
        raw_urban &= valid
    urban = clean_urban_mask(raw_urban, min_area=min_urban_area_px)
    if valid is not None:
        urban &= valid
    if not urban.any():
        raise DataError(
            f"no urban pixels found (no area of fused value >= {urban_t:.3f} larger than "
            f"{min_urban_area_px} px); is there a city in this scene?"
        )
    classes = final_classes(classes, urban)
    centre_fit = centres_mod.centre_threshold(fused, urban, closed_form=closed_form)
    if not centre_fit.thresholds:
        raise DataError("no centre threshold: the urban values do not split into two modes")
    if centre_fit.note:
        notes.append(f"centre threshold: {centre_fit.note}")
    centre_t = centre_fit.thresholds[0]
    centres = centres_mod.centre_mask(fused, urban, centre_t)
    centres_mod.require_centres(centres)
    classes[centres] = CENTRE
    if valid is not None:
        classes[~valid] = NODATA
    profile = density_profile(fused, urban, centres)
    trend = fit_trend(profile, pixel_size_m)
    if trend.note:
        notes.append(f"trend: {trend.note}")
    regions, k = kmeans_regions(trend.residuals, max_regions=MAX_REGIONS)
    if merge_distance_px > 0:
        labels, clusters = centres_mod.centre_clusters(
            centres, merge_distance_px=merge_distance_px
        )
    else:
        labels, clusters = centres_mod.compact_centres(
            fused,
            urban,
            centre_t,
            centres,
            pixel_size_m=pixel_size_m,
            smooth_m=centre_smooth_m,
            merge_m=centre_merge_m,
            min_share=centre_min_share,
        )
    structure = structure_call(clusters, trend, profile, pixel_size_m, min_share=centre_min_share)
    result = UrbanResult(
        mode=mode,
        pixel_size_m=float(pixel_size_m),
        edge=edge,
        sar01=sar01,
        fused=fused,
        classes=classes,
        urban_mask=urban,
        centres=centres,
        class_fit=class_fit,
        centre_fit=centre_fit,
        water_threshold=water_t,
        urban_threshold=urban_t,
        centre_threshold=centre_t,
        profile=profile,
        trend=trend,
        regions=regions,
        regions_k=k,
        cluster_labels=labels,
        clusters=clusters,
        structure=structure,
        notes=notes,
    )
    if clark:
        terrain_mean = class_fit.means[-2] if len(class_fit.means) >= 2 else urban_t
        result.clark = clark_fit(profile, pixel_size_m, terrain_mean, n_boot=n_boot, seed=seed)
        if result.clark.note:
            notes.append(f"clark: {result.clark.note}")
    if TERRAIN not in np.unique(classes):
        notes.append("no terrain pixels left: thresholds may be degenerate")
    if check:
        record_warnings(result)
    return result


def analyze_paper(
    optical_rgb: np.ndarray, sar: np.ndarray, *, pixel_size_m: float, thresholds: str = "published"
) -> UrbanResult:
    """The published procedure, steps 1-9, on an 8-bit true-colour image and an 8-bit SAR rendering.

    Args:
        optical_rgb: (3, H, W) or (H, W, 3) uint8, RGB order.
        sar: (H, W) uint8 (or 3-band grey rendering).
        pixel_size_m: Ground pixel size (required: the inputs carry no georeference).
        thresholds: "published" (least squares on the histogram, fsolve intersections) or "em"
            (variant, not the paper: EM mixture on the pixel values, closed-form intersections).

    Raises:
        InputError: on a missing pixel size, a single-band optical image or a size mismatch.
        DataError: when no urban pixels or no centre can be found.
    """
    if pixel_size_m is None:
        raise InputError(
            "is required in paper mode (the images carry no georeference)", parameter="pixel_size_m"
        )
    edge = edge_density(optical_rgb)
    sar01 = sar_unit(sar)
    fused = fuse(edge, sar01)
    if thresholds not in ("published", "em"):
        raise InputError(f"must be 'published' or 'em', got {thresholds!r}", parameter="thresholds")
    mode = "paper" if thresholds == "published" else "paper_em"
    return run_pipeline(
        fused,
        pixel_size_m=pixel_size_m,
        mode=mode,
        edge=edge,
        sar01=sar01,
        closed_form=thresholds == "em",
    )
