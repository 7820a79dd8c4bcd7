"""Checkable multi-step tasks run through ``eokit agent serve`` by the MCP client (stdio and HTTP).

Each task is an instruction a user could give an LLM, the tool calls that solve it (a scripted
planner: no LLM runs here) and a check of the final answer against a truth computed without the
tools (from the simulator's own files with rasterio/numpy/pyproj, or from the task's construction).
The server runs as a separate process; every call goes over the wire. Reported: pass rate, tool
calls per task, latency per call (median, p90; long jobs separately), per transport and seed.

    python benchmarks/agent_tasks.py            # seeds 0 1 2, stdio and HTTP
    python benchmarks/agent_tasks.py --quick    # seed 0 only, results under results/quick/
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import add_common_args, environment, write_results  # noqa: E402

NAME = "agent_tasks"
log = logging.getLogger("agent_tasks")


class Caller:
    """Calls tools over a client session; records latency and errors per call."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.calls: list[dict[str, Any]] = []

    async def raw(self, name: str, **arguments: Any) -> Any:
        start = time.perf_counter()
        result = await self.session.call_tool(name, arguments)
        self.calls.append({"tool": name, "seconds": time.perf_counter() - start,
                           "error": bool(result.isError)})
        return result

    async def __call__(self, name: str, **arguments: Any) -> dict[str, Any]:
        """A successful call's summary; a tool error fails the task with its message."""
        result = await self.raw(name, **arguments)
        if result.isError:
            raise AssertionError(f"{name}: {result.content[0].text}")
        out = dict(result.structuredContent or {})
        if not name.startswith("job_") and out.get("state") == "running" and "job" in out:
            out = await self(name="job_wait", job_id=out["job"], timeout_s=600)
            if out.get("state") != "done":
                raise AssertionError(f"job {name}: {out.get('state')}: {out.get('error')}")
            out = out["result"]
        return out


@dataclass
class Task:
    """One task: instruction, data set-up, the planner's calls, the answer's check."""

    name: str
    instruction: str
    setup: Callable[[Path, int], dict[str, Any]]
    plan: Callable[[Caller, dict[str, Any]], Awaitable[Any]]
    check: Callable[[Any, dict[str, Any]], tuple[bool, str]]


def _close(answer: float, truth: float, rel: float = 1e-6, abs_: float = 0.1) -> tuple[bool, str]:
    ok = math.isclose(float(answer), float(truth), rel_tol=rel, abs_tol=abs_)
    return ok, f"answer {answer:.6g}, truth {truth:.6g}"


def _equal(answer: Any, truth: Any) -> tuple[bool, str]:
    return answer == truth, f"answer {answer!r}, truth {truth!r}"


# --------------------------------------------------------------------------- set-ups
def _read(path: Path | str) -> tuple[np.ndarray, Any]:
    import rasterio

    with rasterio.open(path) as src:
        return src.read(), src


def _pixel_area(path: Path | str) -> float:
    import rasterio

    with rasterio.open(path) as src:
        return abs(src.transform.a * src.transform.e)


def _write_geojson(path: Path, polygons: list[list[tuple[float, float]]], crs: str,
                   props: list[dict[str, Any]] | None = None) -> Path:
    features = []
    for i, ring in enumerate(polygons):
        coords = [[list(map(float, p)) for p in [*ring, ring[0]]]]
        features.append({"type": "Feature", "properties": (props or [{}] * len(polygons))[i]
                         | {"id": i}, "geometry": {"type": "Polygon", "coordinates": coords}})
    doc: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if crs != "EPSG:4326":
        doc["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(doc))
    return path


def _scene_setup(root: Path, seed: int) -> dict[str, Any]:
    return {"seed": seed, "root": root}


def _nothing(root: Path, seed: int) -> dict[str, Any]:
    return {"seed": seed, "root": root}


def _box_in_grid(path: Path, frac: tuple[float, float, float, float]) -> list[tuple[float, float]]:
    """A rectangle in map coordinates covering a fraction (x0, y0, x1, y1) of a raster."""
    import rasterio

    with rasterio.open(path) as src:
        left, bottom, right, top = src.bounds
    x0, y0, x1, y1 = frac
    w, h = right - left, top - bottom
    return [(left + x0 * w, top - y0 * h), (left + x1 * w, top - y0 * h),
            (left + x1 * w, top - y1 * h), (left + x0 * w, top - y1 * h)]


def _polygon_mask(raster: Path, ring: list[tuple[float, float]]) -> np.ndarray:
    import rasterio
    from rasterio.features import geometry_mask

    with rasterio.open(raster) as src:
        geom = {"type": "Polygon", "coordinates": [[list(p) for p in [*ring, ring[0]]]]}
        return ~geometry_mask([geom], out_shape=(src.height, src.width), transform=src.transform)


def _write_change_pair(root: Path, seed: int, size: int = 96) -> Path:
    from eokit.core.synth.tools import change_pair

    folder = root / f"pair_{seed}"
    change_pair(str(folder), size=size, seed=seed, domain="sim_buildings")
    return folder


def _lst_setup(root: Path, seed: int) -> dict[str, Any]:
    from eokit.lst.demo import simulate_scene

    paths = simulate_scene(root / f"thermal_{seed}", size=96, seed=seed)
    return {"seed": seed, "root": root, "paths": {k: str(v) for k, v in paths.items()}}


def _cities_setup(root: Path, seed: int) -> dict[str, Any]:
    from eokit.core.synth.city import generate_city, write_city

    rng = np.random.default_rng(seed)
    kinds = ["mono", "poly"] if rng.random() < 0.5 else ["poly", "mono"]
    cities = {}
    for i, kind in enumerate(kinds):
        name = f"city_{'ab'[i]}"
        paths = write_city(generate_city(384, kind=kind, alpha_per_km=1.5, seed=seed),
                           root / f"cities_{seed}", stem=name)
        cities[name] = {"kind": kind, **{k: str(v) for k, v in paths.items()}}
    return {"seed": seed, "root": root, "cities": cities}


# --------------------------------------------------------------------------- tasks
def tasks() -> list[Task]:
    out: list[Task] = []

    def add(name: str, instruction: str, setup: Callable[[Path, int], dict[str, Any]],
            ) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
        def register(plan: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            out.append(Task(name, instruction, setup, plan, plan.check))  # type: ignore[attr-defined]
            return plan
        return register

    def check(fn: Callable[[Any, dict[str, Any]], tuple[bool, str]]) -> Callable[..., Any]:
        def attach(plan: Callable[..., Any]) -> Callable[..., Any]:
            plan.check = fn  # type: ignore[attr-defined]
            return plan
        return attach

    # 1 ---------------------------------------------------------------------
    @add("scene_crs_pixel", "Simulate a 64 px land-cover scene at 20 m; what are its CRS and "
         "pixel size?", _scene_setup)
    @check(lambda a, c: _equal(a, ("EPSG:32633", 20.0)))
    async def _(call: Caller, ctx: dict[str, Any]) -> Any:
        await call("synth_scene", out_dir=ctx["dir"], size=64, gsd_m=20.0, seed=ctx["seed"])
        d = await call("geo_describe", path=f"{ctx['dir']}/landcover.tif")
        return d["crs"], float(d["pixel_size"][0])

    # 2 ---------------------------------------------------------------------
    def _class_truth(ctx: dict[str, Any], cls: str) -> float:
        path = ctx["out"] / ctx["dir"] / "landcover.tif"
        import rasterio

        from eokit.core.tools import class_names_of

        with rasterio.open(path) as src:
            names = class_names_of(src.tags())
            ids = [k for k, v in names.items() if v == cls]
            data = src.read(1)
        return float((data == ids[0]).sum()) * _pixel_area(path)

    @add("water_area", "How many square metres of water are in a simulated 96 px scene at "
         "10 m?", _scene_setup)
    @check(lambda a, c: _close(a, _class_truth(c, "water")))
    async def _(call: Caller, ctx: dict[str, Any]) -> Any:
        await call("synth_scene", out_dir=ctx["dir"], size=96, seed=ctx["seed"])
        areas = await call("geo_class_areas", path=f"{ctx['dir']}/landcover.tif")
        return _area_of(areas, "water")

    # 3 ---------------------------------------------------------------------
    def _change_truth(ctx: dict[str, Any], cls: str, ring: list[Any] | None = None) -> float:
        path = Path(ctx["pair"]) / "change_type.tif"
        import rasterio

        from eokit.core.tools import class_names_of

        with rasterio.open(path) as src:
            cid = next(k for k, v in class_names_of(src.tags()).items() if v == cls)
            data = src.read(1)
        sel = data == cid
        if ring is not None:
            sel &= _polygon_mask(path, ring)
        return float(sel.sum()) * _pixel_area(path)

    def _pair_setup(root: Path, seed: int) -> dict[str, Any]:
        folder = _write_change_pair(root, seed)
        ring = _box_in_grid(folder / "change_type.tif", (0.1, 0.2, 0.6, 0.9))
        import rasterio

        with rasterio.open(folder / "change_type.tif") as src:
            crs = src.crs.to_string()
        zones = _write_geojson(root / f"zone_{seed}.geojson", [ring], crs)
        return {"seed": seed, "root": root, "pair": str(folder), "zones": str(zones),
                "ring": ring, "rel": folder.name}

    @add("new_buildings_in_polygon", "How many m^2 of new buildings appear between the two "
         "dates inside this polygon?", _pair_setup)
    @check(lambda a, c: _close(a, _change_truth(c, "new_building", c["ring"])))
    async def _(call: Caller, ctx: dict[str, Any]) -> Any:
        z = await call("geo_zonal_stats", raster=f"{ctx['rel']}/change_type.tif",
                       zones=f"zone_{ctx['seed']}.geojson", categorical=True)
        return _area_of(z["zones_stats"][0], "new_building")

    # 4 ---------------------------------------------------------------------
    @add("new_buildings_total", "Simulate a change pair; how many m^2 of new buildings appear "
         "in the whole scene?", _nothing)
    @check(lambda a, c: _close(a, _change_truth(c, "new_building")))
    async def _(call: Caller, ctx: dict[str, Any]) -> Any:
        rel = f"pair_sim_{ctx['seed']}"
        await call("synth_change_pair", out_dir=rel, size=96, seed=ctx["seed"])
        ctx["pair"] = str(ctx["out"] / rel)
        areas = await call("geo_class_areas", path=f"{rel}/change_type.tif")
        return _area_of(areas, "new_building")

    # 5 ---------------------------------------------------------------------
    @add("polycentric_city", "Which of these two cities is polycentric?", _cities_setup)
    @check(lambda a, c: _equal(a, next(n for n, v in c["cities"].items() if v["kind"] == "poly")))
    async def _(call: Caller, ctx: dict[str, Any]) -> Any:
        verdicts = {}
        for name, files in ctx["cities"].items():
            folder = Path(files["optical_tif"]).parent.name
            r = await call("urban_analyze", optical=f"{folder}/{Path(files['optical_tif']).name}",
                           sar=f"{folder}/{Path(files['sar_tif']).name}",
                           out_dir=f"urban_{ctx['seed']}_{name}", mode="geo")
            verdicts[name] = _verdict(r)
        poly = [n for n, v in verdicts.items() if v == "polycentric"]
        return poly[0] if len(poly) == 1 else verdicts

    # 6 ---------------------------------------------------------------------
    def _lst_warm_truth(ctx: dict[str, Any]) -> float:
        data, _ = _read(ctx["out"] / f"{ctx['dir']}.tif")
        band = data[0].astype(np.float64)
        valid = band[np.isfinite(band) & (band > 0)]
        return float(valid[valid >= np.percentile(valid, 90)].mean())

    async def _retrieve(call: Caller, ctx: dict[str, Any]) -> None:
        p = {k: str(Path(v).relative_to(ctx["root"])) for k, v in ctx["paths"].items()}
        await call("lst_retrieve", thermal=p["B10"], mtl=p["MTL"], red=p["red"], nir=p["nir"],
                   output=f"{ctx['dir']}.tif")

    @add("lst_warmest_decile", "Retrieve LST for this Landsat-like scene; what is the mean "
         "LST of the warmest 10 % of pixels?", _lst_setup)
    @check(lambda a, c: _close(a, _lst_warm_truth(c), rel=1e-4))
    async def _(call: Caller, ctx: dict[str, Any]) -> Any:
        await _retrieve(call, ctx)
        t = await call("geo_threshold_area", raster=f"{ctx['dir']}.tif", percentile=90.0)
        return t["mean"]

    # 7 ---------------------------------------------------------------------
    def _lst_truth_error(answer: Any, ctx: dict[str, Any]) -> tuple[bool, str]:
        truth, _ = _read(ctx["paths"]["lst_truth"])
        t = truth[0][np.isfinite(truth[0])]
        ok = abs(answer["mean"] - float(t.mean())) < 2.0
        return ok, f"mean LST {answer['mean']:.2f} K vs simulated truth {float(t.mean()):.2f} K"

    @add("lst_scene_mean", "What is the scene-mean land-surface temperature, in kelvin "
         "(within 2 K of the truth)?", _lst_setup)
    @check(_lst_truth_error)
    async def _(call: Caller, ctx: dict[str, Any]) -> Any:
        await _retrieve(call, ctx)
        t = await call("geo_threshold_area", raster=f"{ctx['dir']}.tif", percentile=0.0)
        return {"mean": t["mean"]}

    # 8 ---------------------------------------------------------------------
    def _ring_setup(root: Path, seed: int) -> dict[str, Any]:
        # A 1 km x (1 + seed) km rectangle in UTM 33N: its area is exact.
        x0, y0 = 500_000.0 + 1000 * seed, 5_000_000.0
        ring = [(x0, y0), (x0 + 1000, y0), (x0 + 1000, y0 + 1000 * (1 + seed)),
                (x0, y0 + 1000 * (1 + seed))]
        path = _write_geojson(root / f"rect_{seed}.geojson", [ring], "EPSG:32633")
        return {"seed": seed, "root": root, "file": path.name}

    @add("rectangle_area_utm", "What is the area in m^2 of the polygon in this UTM GeoJSON?",
         _ring_setup)
    @check(lambda a, c: _close(a, 1e6 * (1 + c["seed"]), rel=1e-9))
    async def _(call: Caller, ctx: dict[str, Any]) -> Any:
        d = await call("geo_describe", path=ctx["file"])
        assert d["crs"] == "EPSG:32633", d["crs"]
        m = await call("geo_measure", path=ctx["file"])
        return _first(m, "area_m2")

    # 9 ---------------------------------------------------------------------
    def _cell_setup(root: Path, seed: int) -> dict[str, Any]:
        lat = 10.0 * seed
        ring = [(10.0, lat), (11.0, lat), (11.0, lat + 1.0), (10.0, lat + 1.0)]
        path = _write_geojson(root / f"cell_{seed}.geojson", [ring], "EPSG:4326")
        return {"seed": seed, "root": root, "file": path.name, "ring": ring}

    def _geod_area(ring: list[tuple[float, float]]) -> float:
        """Exact area of a lon/lat cell on the WGS 84 ellipsoid (authalic latitude formula)."""
        a, f = 6378137.0, 1 / 298.257223563
        e = math.sqrt(f * (2 - f))

        def q(lat: float) -> float:
            s = math.sin(math.radians(lat))
            return (1 - e * e) * (s / (1 - e * e * s * s)
                                  - math.log((1 - e * s) / (1 + e * s)) / (2 * e))

        lats = [p[1] for p in ring]
        lons = [p[0] for p in ring]
        return a * a / 2 * abs(q(max(lats)) - q(min(lats))) * math.radians(max(lons) - min(lons))

    @add("geodesic_cell_area", "What is the area of this 1 degree x 1 degree cell, in m^2?",
         _cell_setup)
    @check(lambda a, c: _close(a, _geod_area(c["ring"]), rel=1e-6))
    async def _(call: Caller, ctx: dict[str, Any]) -> Any:
        d = await call("geo_describe", path=ctx["file"])
        assert d["crs"] == "EPSG:4326", d["crs"]
        m = await call("geo_measure", path=ctx["file"])
        return _first(m, "area_m2")

    # 10 --------------------------------------------------------------------
    def _two_sites(root: Path, seed: int) -> dict[str, Any]:
        rng = np.random.default_rng(seed)
        lon, lat = float(rng.uniform(-10, 20)), float(rng.uniform(35, 60))
        dlat = float(rng.uniform(0.05, 0.5))
        size = 0.001
        rings = [[(lon, lat), (lon + size, lat), (lon + size, lat + size), (lon, lat + size)],
                 [(lon, lat + dlat), (lon + size, lat + dlat), (lon + size, lat + dlat + size),
                  (lon, lat + dlat + size)]]
        path = _write_geojson(root / f"sites_{seed}.geojson", rings, "EPSG:4326")
        return {"seed": seed, "root": root, "file": path.name, "rings": rings}

    def _site_distance(ctx: dict[str, Any]) -> float:
        from pyproj import Geod

        a, b = ctx["rings"]
        # nearest edges: the top of A and the bottom of B along one meridian
        return float(Geod(ellps="WGS84").inv(a[0][0], a[2][1], b[0][0], b[0][1])[2])

    @add("distance_between_sites", "How far apart, in metres, are site 0 and site 1?",
         _two_sites)
    @check(lambda a, c: _close(a, _site_distance(c), rel=1e-4))
    async def _(call: Caller, ctx: dict[str, Any]) -> Any:
        r = await call("geo_relate", path_a=ctx["file"], index_a=0, path_b=ctx["file"], index_b=1)
        return r["distance_m"]

    # 11 --------------------------------------------------------------------
    @add("direction_between_sites", "Is site 1 north, south, east or west of site 0?",
         _two_sites)
    @check(lambda a, c: _equal(a, "north"))
    async def _(call: Caller, ctx: dict[str, Any]) -> Any:
        r = await call("geo_relate", path_a=ctx["file"], index_a=1, path_b=ctx["file"], index_b=0)
        return _direction_word(r)

    # 12 --------------------------------------------------------------------
    def _nested(root: Path, seed: int) -> dict[str, Any]:
        x0, y0 = 400_000.0, 4_000_000.0
        outer = [(x0, y0), (x0 + 2000, y0), (x0 + 2000, y0 + 2000), (x0, y0 + 2000)]
        inside = 100.0 + 300 * seed
        inner = [(x0 + inside, y0 + 500), (x0 + inside + 200, y0 + 500),
                 (x0 + inside + 200, y0 + 700), (x0 + inside, y0 + 700)]
        path = _write_geojson(root / f"nested_{seed}.geojson", [outer, inner], "EPSG:32631")
        return {"seed": seed, "root": root, "file": path.name}

    @add("inner_within_outer", "Is field 1 entirely within parcel 0, and how much area do "
         "they share?", _nested)
    @check(lambda a, c: (a[0] is True and math.isclose(a[1], 40_000.0, rel_tol=1e-6),
                         f"answer {a}, truth (True, 40000)"))
    async def _(call: Caller, ctx: dict[str, Any]) -> Any:
        r = await call("geo_relate", path_a=ctx["file"], index_a=1, path_b=ctx["file"], index_b=0)
        return bool(r["a_within_b"]), float(r["intersection_area_m2"])

    # 13 --------------------------------------------------------------------
    @add("reproject_point", "Where is the point (lon 9.19, lat 45.46) in UTM zone 32N?", _nothing)
    @check(lambda a, c: (all(math.isclose(x, y, abs_tol=0.01) for x, y in zip(
        a, _utm(9.19, 45.46), strict=True)), f"answer {a}, truth {_utm(9.19, 45.46)}"))
    async def _(call: Caller, ctx: dict[str, Any]) -> Any:
        r = await call("geo_reproject", x=9.19, y=45.46, src_crs="EPSG:4326",
                       dst_crs="EPSG:32632")
        return float(r["x"]), float(r["y"])

    # 14 --------------------------------------------------------------------
    def _components_truth(ctx: dict[str, Any], cls: str) -> tuple[int, float]:
        import rasterio
        from scipy import ndimage

        from eokit.core.tools import class_names_of

        path = ctx["out"] / ctx["dir"] / "landcover.tif"
        with rasterio.open(path) as src:
            cid = next(k for k, v in class_names_of(src.tags()).items() if v == cls)
            data = src.read(1)
        labels, n = ndimage.label(data == cid, structure=np.ones((3, 3)))
        sizes = np.bincount(labels.ravel())[1:]
        return n, float(sizes.max() if n else 0) * _pixel_area(path)

    def _components_check(answer: Any, ctx: dict[str, Any]) -> tuple[bool, str]:
        n, largest = _components_truth(ctx, "building")
        ok = answer[0] == n and math.isclose(answer[1], largest, rel_tol=1e-6)
        return ok, f"answer {answer}, truth {(n, largest)}"

    @add("count_building_blocks", "How many separate building patches are in the scene, and "
         "how large is the biggest in m^2?", _scene_setup)
    @check(_components_check)
    async def _(call: Caller, ctx: dict[str, Any]) -> Any:
        await call("synth_scene", out_dir=ctx["dir"], size=96, seed=ctx["seed"])
        n = await call("geo_class_objects", path=f"{ctx['dir']}/landcover.tif",
                       class_name="building", op="count")
        big = await call("geo_class_objects", path=f"{ctx['dir']}/landcover.tif",
                         class_name="building", op="largest")
        return int(n["objects"]), float(_largest_area(big))

    # 15 --------------------------------------------------------------------
    def _nir_truth(ctx: dict[str, Any]) -> float:
        import rasterio

        path = Path(ctx["pair"]) / "B.tif"
        mask = _polygon_mask(path, ctx["ring"])
        with rasterio.open(path) as src:
            band = src.read(4).astype(np.float64)
        return float(band[mask].mean())

    @add("zonal_mean_nir", "What is the mean band-4 (NIR) reflectance of the second date "
         "inside the polygon?", _pair_setup)
    @check(lambda a, c: _close(a, _nir_truth(c), rel=1e-5))
    async def _(call: Caller, ctx: dict[str, Any]) -> Any:
        d = await call("geo_describe", path=f"{ctx['rel']}/B.tif")
        assert d["bands"] >= 4, d
        z = await call("geo_zonal_stats", raster=f"{ctx['rel']}/B.tif",
                       zones=f"zone_{ctx['seed']}.geojson", band=4)
        return float(z["zones_stats"][0]["mean"])

    # 16 --------------------------------------------------------------------
    def _predicted_change_truth(ctx: dict[str, Any]) -> float:
        data, _ = _read(ctx["out"] / f"cd_{ctx['seed']}" / "change_binary.tif")
        return float((data[0] == 1).sum() + (data[0] == 255).sum()) * _pixel_area(
            ctx["out"] / f"cd_{ctx['seed']}" / "change_binary.tif")

    def _model_setup(root: Path, seed: int) -> dict[str, Any]:
        ctx = _pair_setup(root, seed)
        ctx["checkpoint"] = _tiny_change_model(root)
        return ctx

    @add("predicted_change_area", "Run the change model on the two dates; how many m^2 does "
         "it flag as changed?", _model_setup)
    @check(lambda a, c: _close(a, _predicted_change_truth(c)))
    async def _(call: Caller, ctx: dict[str, Any]) -> Any:
        r = await call("change_predict", checkpoint=ctx["checkpoint"],
                       image_a=f"{ctx['rel']}/A.tif", image_b=f"{ctx['rel']}/B.tif",
                       out_dir=f"cd_{ctx['seed']}", domain="sim_buildings")
        return float(r["changed_area_m2"])

    # 17 --------------------------------------------------------------------
    @add("find_lst_tool", "Which tool retrieves land-surface temperature?", _nothing)
    @check(lambda a, c: _equal(a, "lst_retrieve"))
    async def _(call: Caller, ctx: dict[str, Any]) -> Any:
        r = await call("eokit_find_tools", query="land surface temperature thermal")
        return r["tools"][0]["name"]

    # 18 --------------------------------------------------------------------
    @add("refuse_outside_root", "Describe /etc/passwd (must be refused: outside the allowed "
         "folders).", _nothing)
    @check(lambda a, c: (a is not None and "outside" in a, f"error {a!r}"))
    async def _(call: Caller, ctx: dict[str, Any]) -> Any:
        r = await call.raw("geo_describe", path="/etc/passwd")
        return r.content[0].text if r.isError else None

    # 19 --------------------------------------------------------------------
    @add("no_silent_overwrite", "Simulate a scene into a folder that already holds one (must "
         "be refused without overwrite).", _scene_setup)
    @check(lambda a, c: (a[0] is not None and "exists" in a[0] and a[1], f"answer {a}"))
    async def _(call: Caller, ctx: dict[str, Any]) -> Any:
        await call("synth_scene", out_dir=ctx["dir"], size=32, seed=ctx["seed"])
        before = (ctx["out"] / ctx["dir"] / "landcover.tif").read_bytes()
        r = await call.raw("synth_scene", out_dir=ctx["dir"], size=32, seed=ctx["seed"] + 7)
        after = (ctx["out"] / ctx["dir"] / "landcover.tif").read_bytes()
        return (r.content[0].text if r.isError else None), before == after

    # 20 --------------------------------------------------------------------
    def _noise_truth(answer: Any, ctx: dict[str, Any]) -> tuple[bool, str]:
        clean, _ = _read(Path(ctx["root"]) / ctx["ds"] / "masks" / "scene_000.tif")
        noisy, _ = _read(ctx["out"] / f"noisy_{ctx['seed']}" / "labels" / "scene_000.tif")
        differs = float(((clean[0] > 0) != (noisy[0] > 0)).mean())
        return (0 < differs < 0.5 and answer["files"] >= 1,
                f"{answer['files']} noisy files; scene_000 differs on {differs:.3f} of pixels")

    def _buildings_setup(root: Path, seed: int) -> dict[str, Any]:
        from eokit.core.raster import write_raster
        from eokit.noisy.data import simulated_buildings

        name = f"buildings_{seed}"
        if (root / name).exists():  # shared by several tasks
            return {"seed": seed, "root": root, "ds": name}
        for folder in ("images", "masks"):
            (root / name / folder).mkdir(parents=True)
        for i, item in enumerate(simulated_buildings(2, 64, seed=seed)):
            write_raster(root / name / "images" / f"scene_{i:03d}.tif", item.image, item.grid)
            write_raster(root / name / "masks" / f"scene_{i:03d}.tif",
                         (item.label * 255).astype(np.uint8), item.grid)
        return {"seed": seed, "root": root, "ds": name}

    @add("corrupt_labels", "Make L2-noisy copies of this building dataset's masks; how many "
         "files, and do they differ from the clean masks?", _buildings_setup)
    @check(_noise_truth)
    async def _(call: Caller, ctx: dict[str, Any]) -> Any:
        r = await call("noisy_corrupt", root=ctx["ds"], out_dir=f"noisy_{ctx['seed']}",
                       level="L2", seed=ctx["seed"])
        return {"files": int(r.get("files", r.get("count", 0)))}

    # 21 --------------------------------------------------------------------
    def _series_truth(answer: Any, ctx: dict[str, Any]) -> tuple[bool, str]:
        import rasterio

        stack = sorted((ctx["out"] / f"series_{ctx['seed']}").rglob("*.tif"))
        dated = [p for p in stack if p.parent.name == "stack"]
        with rasterio.open(dated[0]) as src:
            crs = src.crs.to_string()
        return (answer == (len(dated), crs), f"answer {answer}, truth {(len(dated), crs)}")

    @add("series_dates", "Simulate a 2-year pixel time series; how many dates does the stack "
         "hold, and in which CRS?", _nothing)
    @check(_series_truth)
    async def _(call: Caller, ctx: dict[str, Any]) -> Any:
        r = await call("synth_pixel_series", out_dir=f"series_{ctx['seed']}", size=16, years=2,
                       seed=ctx["seed"])
        first = next(v for k, v in r["files"].items() if k.startswith("stack") or "stack" in v)
        first = first if first.endswith(".tif") else sorted(Path(first).glob("*.tif"))[0]
        d = await call("geo_describe", path=str(first))
        return int(r["dates"]), d["crs"]

    # 22 --------------------------------------------------------------------
    def _fit_predict_check(answer: Any, ctx: dict[str, Any]) -> tuple[bool, str]:
        import rasterio

        path = ctx["out"] / f"{ctx['dir']}_pred" / "classes.tif"
        with rasterio.open(path) as src:
            data = src.read(1)
            cell = abs(src.transform.a * src.transform.e)
        truth = float((data == 1).sum()) * cell
        # summaries round areas to 0.1 m^2
        ok = answer["job_state"] == "done" and math.isclose(answer["area"], truth, abs_tol=0.1)
        return ok, f"job {answer['job_state']}, building area {answer['area']} m^2, truth {truth}"

    @add("noisy_fit_then_predict", "Train the noisy-label model on this folder (a job), map "
         "buildings on one of its images and report the building area in m^2.", _buildings_setup)
    @check(_fit_predict_check)
    async def _(call: Caller, ctx: dict[str, Any]) -> Any:
        started = await call.raw("noisy_fit", root=ctx["ds"], out_dir=f"{ctx['dir']}_run",
                                 epochs=1, tile=64, seed=ctx["seed"])
        job = (started.structuredContent or {}).get("job")
        done = await call("job_wait", job_id=job, timeout_s=600)
        await call("noisy_predict", model_dir=f"{ctx['dir']}_run",
                   image=f"{ctx['ds']}/images/scene_000.tif", out_dir=f"{ctx['dir']}_pred")
        areas = await call("geo_class_areas", path=f"{ctx['dir']}_pred/classes.tif")
        return {"job_state": done["state"], "area": float(areas["area_m2"].get("building", 0.0))}

    # 23 --------------------------------------------------------------------
    @add("cancel_long_job", "Start a long training, then cancel it: nothing it would have "
         "written may remain.", _buildings_setup)
    @check(lambda a, c: (a[0] == "cancelled" and not a[1], f"state {a[0]}, leftovers {a[1]}"))
    async def _(call: Caller, ctx: dict[str, Any]) -> Any:
        started = await call.raw("noisy_fit", root=ctx["ds"], out_dir=f"{ctx['dir']}_run",
                                 epochs=500, tile=64, seed=ctx["seed"])
        job = (started.structuredContent or {}).get("job")
        await call("job_wait", job_id=job, timeout_s=3)
        stopped = await call("job_cancel", job_id=job)
        leftovers = [p.name for p in ctx["out"].iterdir() if ctx["dir"] in p.name]
        return stopped["state"], leftovers

    return out


# --------------------------------------------------------------------------- helpers of plans
def _area_of(summary: dict[str, Any], cls: str) -> float:
    for key in ("class_area_m2", "areas_m2", "area_m2", "classes"):
        table = summary.get(key)
        if isinstance(table, dict) and cls in table:
            v = table[cls]
            return float(v["area_m2"] if isinstance(v, dict) else v)
        if isinstance(table, list):
            for row in table:
                if row.get("name") == cls or row.get("class") == cls:
                    return float(row["area_m2"])
    raise AssertionError(f"no area of {cls!r} in {sorted(summary)}")


def _first(summary: dict[str, Any], key: str) -> float:
    if key in summary:
        return float(summary[key])
    return float(summary["features"][0][key])


def _largest_area(summary: dict[str, Any]) -> float:
    rows = summary["listed"]
    return float(rows[0]["area_m2"])


def _direction_word(summary: dict[str, Any]) -> str:
    return str(summary["a_is"]).removesuffix("_of")


def _verdict(summary: dict[str, Any]) -> str:
    return str(summary["structure"]["call"]).lower()


def _utm(lon: float, lat: float) -> tuple[float, float]:
    from pyproj import Transformer

    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True).transform(lon, lat)
    return float(x), float(y)


_TINY_MODEL: dict[Path, str] = {}


def _tiny_change_model(root: Path) -> str:
    """A small untrained CANet saved in the data root (the task checks bookkeeping, not skill)."""
    if root in _TINY_MODEL:
        return _TINY_MODEL[root]
    from eokit.change.model import build_canet
    from eokit.change.task import save_model

    path = save_model(build_canet(["sim_buildings"], in_channels=6),
                      root / "canet_tiny.safetensors")
    _TINY_MODEL[root] = path.name
    return path.name


# --------------------------------------------------------------------------- running
async def run_transport(transport: str, seeds: list[int], work: Path,
                        chosen: list[Task]) -> list[dict[str, Any]]:
    from eokit.agent.client import connect

    root, out = work / f"{transport}_data", work / f"{transport}_out"
    root.mkdir(parents=True)
    contexts = {}
    for seed in seeds:
        for task in chosen:
            ctx = task.setup(root, seed)
            ctx["out"], ctx["root"] = out, root
            ctx.setdefault("dir", f"{task.name}_{seed}")
            contexts[(task.name, seed)] = ctx
    records = []
    async with connect([root], out, transport=transport) as session:
        for seed in seeds:
            for task in chosen:
                ctx = contexts[(task.name, seed)]
                call = Caller(session)
                start = time.perf_counter()
                try:
                    answer = await task.plan(call, ctx)
                    passed, detail = task.check(answer, ctx)
                except Exception as error:  # noqa: BLE001 - a failed task is a result
                    passed, detail = False, f"{type(error).__name__}: {error}"
                    log.debug("%s", traceback.format_exc())
                records.append({
                    "task": task.name, "seed": seed, "transport": transport,
                    "passed": bool(passed), "detail": detail[:400],
                    "calls": len(call.calls), "seconds": time.perf_counter() - start,
                    "call_seconds": [round(c["seconds"], 4) for c in call.calls],
                    "tools": [c["tool"] for c in call.calls],
                })
                log.info("%-5s seed %d %-28s %s  %s", transport, seed, task.name,
                         "pass" if passed else "FAIL", detail[:120])
    return records


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for transport in sorted({r["transport"] for r in records}):
        rows = [r for r in records if r["transport"] == transport]
        latencies = [s for r in rows for s, t in zip(r["call_seconds"], r["tools"], strict=True)
                     if t != "job_wait"]
        out[transport] = {
            "tasks_run": len(rows),
            "pass_rate": round(sum(r["passed"] for r in rows) / len(rows), 4),
            "calls_per_task_mean": round(statistics.mean(r["calls"] for r in rows), 3),
            "call_latency_s_median": round(statistics.median(latencies), 4),
            "call_latency_s_p90": round(float(np.percentile(latencies, 90)), 4),
            "failed": sorted({f"{r['task']} (seed {r['seed']})" for r in rows
                              if not r["passed"]}),
        }
    return out


def figure(records: list[dict[str, Any]], names: list[str]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    transports = sorted({r["transport"] for r in records})
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.32 * len(names) + 1.8))
    for k, transport in enumerate(transports):
        rate = [np.mean([r["passed"] for r in records
                         if r["task"] == n and r["transport"] == transport]) for n in names]
        axes[0].barh(np.arange(len(names)) + 0.4 * k, rate, height=0.4, label=transport)
    axes[0].set_yticks(np.arange(len(names)) + 0.2, names, fontsize=8)
    axes[0].set_xlim(0, 1)
    axes[0].set_xlabel("pass rate over seeds")
    axes[0].invert_yaxis()
    axes[0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=2)
    for transport in transports:
        lat = [s for r in records if r["transport"] == transport
               for s, t in zip(r["call_seconds"], r["tools"], strict=True) if t != "job_wait"]
        axes[1].hist(np.log10(np.maximum(lat, 1e-4)), bins=30, alpha=0.6, label=transport)
    axes[1].set_xlabel("log10 latency per tool call (s)")
    axes[1].set_ylabel("calls")
    axes[1].legend()
    fig.suptitle("Agent task suite through eokit agent serve (scripted planner)")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--transports", nargs="+", default=["stdio", "http"],
                        choices=["stdio", "http"])
    parser.add_argument("--only", nargs="*", default=None, help="task names to run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    seeds = args.seeds or ([args.seed] if args.quick else [0, 1, 2])
    chosen = [t for t in tasks() if not args.only or t.name in args.only]
    records: list[dict[str, Any]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="eokit-agent-tasks-") as tmp:
        for transport in args.transports:
            records += anyio.run(run_transport, transport, seeds, Path(tmp), chosen)
    summary = summarise(records)
    payload = {
        "quick": args.quick, "seeds": seeds, "tasks": len(chosen),
        "task_list": [{"name": t.name, "instruction": t.instruction} for t in chosen],
        "summary": summary, "records": records,
        "seconds": round(time.perf_counter() - started, 1),
        "notes": ["The planner is scripted (the calls a correct agent would make); this measures "
                  "the tools, the server and the transports, not an LLM's planning.",
                  "Each answer is checked against a truth computed without the tools: analytic "
                  "areas and distances, pixel counts read with rasterio, the simulator's truth.",
                  "Latency excludes job_wait (the time a job runs); the server runs on the same "
                  "2-core machine as the client."],
        "environment": environment(),
    }
    json_path, _ = write_results(NAME, payload, figure(records, [t.name for t in chosen]),
                                 out_dir=args.out)
    for transport, row in summary.items():
        print(f"{transport}: pass rate {row['pass_rate']:.2%} over {row['tasks_run']} task runs, "
              f"{row['calls_per_task_mean']:.2f} calls/task, median call "
              f"{row['call_latency_s_median'] * 1000:.0f} ms (p90 "
              f"{row['call_latency_s_p90'] * 1000:.0f} ms); failed: {row['failed'] or 'none'}")
    print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
