"""Urban density gradients: the 8 Polish cities in paper mode, alpha recovery on simulated cities.

Real data: ../shared/data/urban/input_data (Copernicus Browser JPEG exports, 2500 x 1576 px, no
georeference; skipped cleanly when absent). Pixel size: an assumption, stated in the JSON.
Simulated cities (synth.city): geo mode Clark alpha vs the true law, mono/polycentric, noise levels.

Writes benchmarks/results/urban_cities.json and urban_cities.png.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, add_common_args, seed_all, write_results  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "urban" / "input_data"
CITIES = ("Gdansk", "Klodzko", "Krakow", "Lodz", "Malbork", "Olsztyn", "Ruda_Slaska", "Warszawa")
#: Assumed ground size of one exported pixel. The exports carry no georeference; 10 m is the
#: native Sentinel-2 true-colour resolution. Check: the Warsaw Chopin runway 15/33 (3690 m)
#: spans about 272 px in the Warszawa export, i.e. about 13.6 m/px for that city.
PIXEL_SIZE_M = 10.0


def city_pairs(data: Path) -> list[tuple[str, Path, Path]]:
    """(name, optical, sar) for the cities whose files exist."""
    pairs = []
    for name in CITIES:
        optical = sorted(data.glob(f"{name}_*Sentinel-2*.jpg"))
        sar = sorted(data.glob(f"{name}_*Sentinel-1*.jpg"))
        if optical and sar:
            pairs.append((name, optical[0], sar[0]))
    return pairs


def run_cities(out: Path, workers: int, mode: str = "paper") -> dict:
    """Batch over the real cities (paper mode, or the EM-threshold variant)."""
    from eokit.urban.task import batch

    pairs = city_pairs(DATA)
    if not pairs:
        return {"skipped": f"no data at {DATA}"}
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "cities.csv"
        csv_path.write_text(
            "name,optical,sar,pixel_size_m\n"
            + "".join(f"{n},{o},{s},{PIXEL_SIZE_M}\n" for n, o, s in pairs)
        )
        with Timer() as timer:
            results = batch(csv_path, out / mode, workers=workers, mode=mode)
    cities = []
    for m in results:
        if "error" in m:
            cities.append({"city": m["name"], "error": m["error"]})
            continue
        cities.append(
            {
                "city": m["name"],
                "alpha_per_km": m["alpha_per_km"],
                "alpha_std_err_per_km": m["alpha_std_err_per_km"],
                "ld_km": m["ld_km"],
                "trend_intercept": m["trend_intercept"],
                "rho_target": m["rho_target"],
                "trend_method": m["trend_method"],
                "n_minima": m["n_minima"],
                "regions": [
                    {k: r[k] for k in ("start_km", "end_km", "kind")} for r in m["regions"]
                ],
                "structure": m["structure"]["call"],
                "structure_explanation": m["structure"]["explanation"],
                "n_centres": m["structure"]["n_centres"],
                "n_comparable_centres": m["structure"]["n_comparable_centres"],
                "n_centre_clusters_total": m["structure"]["n_clusters_total"],
                "thresholds": {k: m["thresholds"][k] for k in ("water", "urban", "centre")},
                "threshold_methods": [
                    m["thresholds"]["class_fit"]["method"],
                    m["thresholds"]["centre_fit"]["method"],
                ],
                "fractions": m["fractions"],
                "max_distance_km": m["max_distance_km"],
                "assumptions_hold": m["assumptions_hold"],
                "warnings": m["warnings"],
                "notes": m["notes"],
                "analysis_seconds": m["analysis_seconds"],
            }
        )
    return {
        "mode": mode,
        "pixel_size_m": PIXEL_SIZE_M,
        "workers": workers,
        "batch_wall_seconds": timer.seconds,
        "cities": cities,
    }


def structure_at_scales(name: str = "Malbork", sizes_m: tuple[float, ...] = (5.0, 10.0)) -> dict:
    """The mono/polycentric call of one city at several assumed pixel sizes (paper mode).

    The call depends on the scale: centre cores are smoothed and merged over distances in metres.
    The reference notebook used 5 m pixels; the benchmark's table assumes 10 m.
    """
    from scipy import ndimage

    from eokit.urban.task import analyze

    pairs = [p for p in city_pairs(DATA) if p[0] == name]
    if not pairs:
        return {"skipped": f"no {name} data at {DATA}"}
    _, optical, sar = pairs[0]
    out = {}
    for size in sizes_m:
        result, _, _ = analyze(optical, sar, mode="paper", pixel_size_m=size)
        s = result.structure
        out[f"{size:g} m"] = {
            "call": s["call"],
            "n_centres": s["n_centres"],
            "cluster_areas_px": s["cluster_areas_px"],
            "raw_centre_clusters": int(
                ndimage.label(result.centres, structure=np.ones((3, 3)))[1]
            ),
            "explanation": s["explanation"],
        }
    return {"city": name, "by_pixel_size": out}


def run_simulations(quick: bool, seed: int) -> list[dict]:
    """Geo-mode Clark alpha and centre count on simulated cities."""
    from eokit.core.synth.city import generate_city, write_city
    from eokit.urban.geo import GeoConfig, analyze_geo

    alphas = (1.0,) if quick else (0.5, 1.0, 2.0)
    noises = (0.25,) if quick else (0.1, 0.25, 0.5)
    seeds = (seed,)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("mono", "poly"):
            for alpha in alphas:
                for noise in noises:
                    for s in seeds:
                        # scale-matched scenes: the city spans the same pixels for every alpha
                        city = generate_city(
                            384,
                            kind=kind,
                            alpha_per_km=alpha * (1.5 if kind == "poly" else 1.0),
                            pixel_size_m=10.0 / alpha,
                            noise=noise,
                            seed=s,
                        )
                        paths = write_city(city, tmp, stem="c")
                        start = time.perf_counter()
                        try:
                            result, _ = analyze_geo(
                                paths["optical_tif"],
                                paths["sar_tif"],
                                config=GeoConfig(n_boot=200, seed=s),
                            )
                        except Exception as error:  # noqa: BLE001 - recorded, not hidden
                            rows.append(
                                {
                                    "kind": kind,
                                    "alpha_true": city.alpha_per_km,
                                    "noise": noise,
                                    "seed": s,
                                    "error": str(error),
                                }
                            )
                            continue
                        m = result.metrics()
                        c = m["clark"]
                        rows.append(
                            {
                                "kind": kind,
                                "alpha_true": city.alpha_per_km,
                                "noise": noise,
                                "seed": s,
                                "pixel_size_m": city.pixel_size_m,
                                "alpha_clark": c["alpha_per_km"],
                                "ci95": c["ci95"],
                                "rel_error": c["alpha_per_km"] / city.alpha_per_km - 1.0,
                                "ci_covers_truth": c["ci95"][0]
                                <= city.alpha_per_km
                                <= c["ci95"][1],
                                "alpha_paper_slope": m["alpha_per_km"],
                                "n_centres": m["structure"]["n_centres"],
                                "n_centres_true": len(city.centres_px),
                                "call": m["structure"]["call"],
                                "seconds": time.perf_counter() - start,
                            }
                        )
    return rows


def summarise(sims: list[dict]) -> dict:
    ok = [r for r in sims if "error" not in r]
    out: dict = {"n": len(sims), "n_failed": len(sims) - len(ok)}
    for kind in ("mono", "poly"):
        sub = [r for r in ok if r["kind"] == kind]
        if not sub:
            continue
        errors = np.array([r["rel_error"] for r in sub])
        out[kind] = {
            "median_rel_error": float(np.median(errors)),
            "median_abs_rel_error": float(np.median(np.abs(errors))),
            "max_abs_rel_error": float(np.max(np.abs(errors))),
            "centre_count_accuracy": float(
                np.mean([r["n_centres"] == r["n_centres_true"] for r in sub])
            ),
            "ci_coverage": float(np.mean([r["ci_covers_truth"] for r in sub])),
            "by_noise": {
                str(n): float(np.median(np.abs([r["rel_error"] for r in sub if r["noise"] == n])))
                for n in sorted({r["noise"] for r in sub})
            },
        }
    return out


def figure(real: dict, sims: list[dict]):  # type: ignore[no-untyped-def]
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 10))
    axes = fig.subplots(2, 2)
    cities = [c for c in real.get("cities", []) if "error" not in c]
    ax = axes[0, 0]
    if cities:
        names = [c["city"] for c in cities]
        alphas = [c["alpha_per_km"] for c in cities]
        ax.bar(
            names,
            alphas,
            color=["tab:red" if c["structure"] == "polycentric" else "tab:blue" for c in cities],
        )
        ax.set_ylabel("alpha (per km, slope of C through minima)")
        failed = [c["city"] for c in real.get("cities", []) if "error" in c]
        ax.set_title(
            f"Paper mode, {len(cities)} of {len(real['cities'])} cities, assumed "
            f"{real['pixel_size_m']} m/px (blue mono, red poly)"
            + (f"; failed: {', '.join(failed)}" if failed else ""),
            fontsize=10,
        )
        ax.tick_params(axis="x", rotation=45)
        ax2 = ax.twinx()
        ax2.plot(
            names,
            [c["ld_km"] if c["ld_km"] is not None else np.nan for c in cities],
            "ko",
            label="LD",
        )
        ax2.set_ylabel("LD (km, black dots)")
    else:
        ax.text(0.5, 0.5, real.get("skipped", "no cities"), ha="center")
    ax = axes[0, 1]
    ok = [r for r in sims if "error" not in r]
    colours = {0.1: "tab:green", 0.25: "tab:orange", 0.5: "tab:red"}
    for r in ok:
        ax.errorbar(
            r["alpha_true"],
            r["alpha_clark"],
            yerr=[[r["alpha_clark"] - r["ci95"][0]], [r["ci95"][1] - r["alpha_clark"]]],
            fmt="o" if r["kind"] == "mono" else "s",
            color=colours.get(r["noise"], "k"),
            ms=5,
            alpha=0.8,
        )
    lim = max([r["alpha_true"] for r in ok] + [1]) * 1.4
    ax.plot([0, lim], [0, lim], "k--", lw=1)
    ax.set_xlabel("true alpha (per km)")
    ax.set_ylabel("geo-mode Clark alpha (95% CI)")
    ax.set_title(
        "Simulated cities: o mono, s poly; green/orange/red noise 0.1/0.25/0.5", fontsize=10
    )
    ax = axes[1, 0]
    for kind, marker in (("mono", "o"), ("poly", "s")):
        sub = [r for r in ok if r["kind"] == kind]
        ax.scatter(
            [r["noise"] + (0.01 if kind == "poly" else 0) for r in sub],
            [100 * r["rel_error"] for r in sub],
            marker=marker,
            label=kind,
        )
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("noise level (SAR speckle CV)")
    ax.set_ylabel("alpha error (%)")
    ax.legend()
    ax.set_title("Clark alpha relative error", fontsize=10)
    ax = axes[1, 1]
    if cities:
        ax.bar([c["city"] for c in cities], [c["analysis_seconds"] for c in cities])
        ax.set_ylabel("seconds per city (in a 2-process batch)")
        ax.set_title(
            f"Wall time: batch of {len(real['cities'])} in {real['batch_wall_seconds']:.0f} s "
            f"with {real['workers']} processes",
            fontsize=10,
        )
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    seed_all(args.seed)
    out_cities = Path(tempfile.mkdtemp(prefix="urban-bench-"))
    real = run_cities(out_cities, args.workers) if not args.quick else {"skipped": "--quick"}
    variant = (
        run_cities(out_cities, args.workers, mode="paper_em")
        if not args.quick
        else {"skipped": "--quick"}
    )
    scales = structure_at_scales() if not args.quick else {"skipped": "--quick"}
    sims = run_simulations(args.quick, args.seed)
    summary = summarise(sims)
    notes = [
        f"Pixel size {PIXEL_SIZE_M} m is an assumption (Sentinel-2 native); the exports carry no "
        "georeference and their zoom is unknown. A landmark check (Warsaw Chopin runway 15/33, "
        "3690 m ~ 272 px) gives ~13.6 m/px for Warszawa; the reference notebook used 5 m. "
        "alpha_per_km scales as 1/pixel size and LD as pixel size: at 13.6 m/px Warsaw's alpha "
        "would be 10/13.6 = 0.74x and LD 1.36x the values listed.",
        "real_cities_em_thresholds: the same pipeline with EM-fitted mixtures (closed-form "
        "intersections) instead of the published least-squares histogram fit; not the paper.",
        "alpha (paper) is the slope of the fused optical+SAR value per km, not a population "
        "density exponent; compare cities only at the same pixel size.",
        "Geo-mode Clark alpha on the simulator is biased high (see summary: median error), mostly "
        "from rings at the ragged urban edge that mix blurred rural signal; the bootstrap CI is "
        "over bins and does not include this bias, so its coverage is poor.",
    ]
    payload = {
        "real_cities": real,
        "real_cities_em_thresholds": variant,
        "structure_by_pixel_size": scales,
        "simulations": sims,
        "simulation_summary": summary,
        "notes": notes,
        "per_city_outputs": str(out_cities),
    }
    json_path, png_path = write_results(
        "urban_cities", payload, figure(real, sims), out_dir=args.out
    )
    print(json_path, png_path)


if __name__ == "__main__":
    main()
