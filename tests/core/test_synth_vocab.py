"""Open-vocabulary simulator: deterministic, restricted to the asked classes, looks as described."""

import json

import numpy as np
import pytest
from scipy import ndimage

from eokit.core.errors import InputError
from eokit.core.synth.vocab import (
    VOCABULARY,
    VOCABULARY_NAMES,
    generate_vocab_scene,
    quicklook_figure,
    vocab_class,
    write_vocab_scene,
)


@pytest.fixture(scope="module")
def scenes():
    return [generate_vocab_scene(256, seed=s) for s in range(4)]


def _pixels(scenes, name):
    """(3, N) RGB values of all pixels labelled ``name`` in the scenes."""
    parts = [s.image[:, s.label == s.class_names.index(name)] for s in scenes]
    return np.concatenate(parts, axis=1)


def test_vocabulary_is_complete_and_consistent():
    assert len(VOCABULARY) >= 16
    assert len(set(VOCABULARY_NAMES)) == len(VOCABULARY_NAMES)
    colours = [c.colour for c in VOCABULARY]
    assert len(set(colours)) == len(colours)
    for item in VOCABULARY:
        assert item.description and item.synonyms
        assert item.colour.startswith("#") and len(item.colour) == 7
        assert name_free(item.synonyms, VOCABULARY_NAMES, item.name)
    assert vocab_class("Car Park").name == "parking lot"
    with pytest.raises(InputError, match="unknown class"):
        vocab_class("volcano")


def name_free(synonyms, names, own):
    """No synonym is the canonical name of another class."""
    return not any(s in names and s != own for s in synonyms)


def test_scene_is_deterministic_with_documented_shapes(scenes):
    again = generate_vocab_scene(256, seed=0)
    first = scenes[0]
    assert np.array_equal(first.image, again.image) and np.array_equal(first.label, again.label)
    assert not np.array_equal(first.label, scenes[1].label)
    assert first.image.shape == (3, 256, 256) and first.image.dtype == np.float32
    assert first.label.shape == (256, 256) and first.label.dtype == np.int64
    assert 0.0 <= first.image.min() and first.image.max() <= 1.0
    assert first.class_names == VOCABULARY_NAMES
    assert first.label.min() >= 0 and first.label.max() < len(VOCABULARY_NAMES)
    assert first.grid.height == 256 and first.grid.crs.is_projected
    rect = generate_vocab_scene((64, 96), seed=1, gsd_m=0.5)
    assert rect.image.shape == (3, 64, 96) and rect.grid.pixel_size_m == pytest.approx(0.5)


def test_every_class_appears_in_most_scenes(scenes):
    present = np.zeros(len(VOCABULARY_NAMES), dtype=int)
    for scene in scenes:
        present += np.bincount(scene.label.ravel(), minlength=len(VOCABULARY_NAMES)) > 0
    missing = [n for n, k in zip(VOCABULARY_NAMES, present, strict=True) if k < 3]
    assert not missing, f"classes in fewer than 3 of 4 scenes: {missing}"


def test_classes_restrict_the_scene_and_keep_the_given_order():
    wanted = ["road", "orchard", "water body", "greenhouse"]
    seen = np.zeros(len(wanted), dtype=int)
    for seed in range(4):
        scene = generate_vocab_scene(256, seed=seed, classes=wanted)
        assert scene.class_names == tuple(wanted)
        assert set(np.unique(scene.label)) <= set(range(len(wanted)))
        seen += np.bincount(scene.label.ravel(), minlength=len(wanted)) > 0
    assert (seen >= 3).all(), seen
    # Only object classes: they fill the parcels themselves.
    only = generate_vocab_scene(64, seed=0, classes=["solar farm", "building"])
    assert set(np.unique(only.label)) <= {0, 1}
    assert (only.label == 0).mean() > 0.5
    for bad, match in (([], "at least one"), (["road", "Road"], "twice"), ([" "], "empty"),
                       (["road", "lava"], "unknown")):
        with pytest.raises(InputError, match=match):
            generate_vocab_scene(64, seed=0, classes=bad)


def test_class_colours_match_their_descriptions(scenes):
    mean = {n: _pixels(scenes, n).mean(axis=1) for n in VOCABULARY_NAMES}
    brightness = {n: float(v.mean()) for n, v in mean.items()}
    red, green, blue = 0, 1, 2
    # Water: dark and bluish.
    for water in ("water body", "river"):
        assert brightness[water] < 0.1 and mean[water][blue] > mean[water][red]
    # Sand bright and yellowish; lake shore sandy but darker (wet margin).
    assert brightness["sand"] > 0.3 and mean["sand"][red] > mean["sand"][blue] * 1.4
    assert brightness["bare soil"] < brightness["sand"]
    assert brightness["lake shore"] < brightness["sand"]
    # Greenhouses are the brightest class; solar farms dark and blue.
    assert max(brightness, key=brightness.get) == "greenhouse"
    assert brightness["solar farm"] < 0.15 and mean["solar farm"][blue] > mean["solar farm"][red]
    # Vegetation is green; the sports pitch greener than grassland; conifers darker than broadleaf.
    for veg in ("conifer forest", "broadleaf forest", "grassland", "orchard", "sports field"):
        assert mean[veg][green] > mean[veg][red] and mean[veg][green] > mean[veg][blue], veg
    chroma = {n: v[green] / v.sum() for n, v in mean.items()}
    assert chroma["sports field"] > chroma["grassland"]
    assert brightness["conifer forest"] < brightness["broadleaf forest"]
    # Roads and parking lots are grey (channels within 15 % of each other).
    for grey in ("road", "parking lot"):
        assert np.ptp(mean[grey]) / mean[grey].mean() < 0.15, grey


def _mean_frequency(image):
    """Power-weighted mean spatial frequency (cycles/pixel) of a grey image."""
    grey = image - image.mean()
    power = np.abs(np.fft.fftshift(np.fft.fft2(grey))) ** 2
    fy = np.fft.fftshift(np.fft.fftfreq(grey.shape[0]))[:, None]
    fx = np.fft.fftshift(np.fft.fftfreq(grey.shape[1]))[None, :]
    radius = np.hypot(fy, fx)
    return float((power * radius).sum() / power.sum())


def test_conifer_crowns_are_finer_than_broadleaf_crowns():
    conifer = generate_vocab_scene(128, seed=2, classes=["conifer forest"]).image.mean(0)
    broadleaf = generate_vocab_scene(128, seed=2, classes=["broadleaf forest"]).image.mean(0)
    assert _mean_frequency(conifer) > 1.3 * _mean_frequency(broadleaf)


def test_orchard_is_a_periodic_grid_of_crowns():
    scene = generate_vocab_scene(128, seed=3, classes=["orchard"])
    grey = scene.image[1] - scene.image[1].mean()
    power = np.abs(np.fft.fft2(grey)) ** 2
    power[0, 0] = 0
    freq = np.hypot(*np.meshgrid(np.fft.fftfreq(128), np.fft.fftfreq(128), indexing="ij"))
    band = (freq > 1 / 9) & (freq < 0.3)  # periods 3.3-9 px
    peak = np.unravel_index(np.argmax(np.where(band, power, 0)), power.shape)
    period_px = 1 / freq[peak]
    # Tree spacing is 5.5-7 m at 1 m pixels.
    assert 5.0 < period_px < 7.5, period_px
    assert power[peak] > 40 * np.median(power[band])
    # Grassland has no such peak.
    grass = generate_vocab_scene(128, seed=3, classes=["grassland"]).image[1]
    gp = np.abs(np.fft.fft2(grass - grass.mean())) ** 2
    assert gp[band].max() < 30 * np.median(gp[band])


def _elongation(mask):
    """Area over squared maximal width of the largest component (~length/width)."""
    components, n = ndimage.label(mask)
    assert n > 0
    largest = components == (np.argmax(np.bincount(components.ravel())[1:]) + 1)
    width = 2 * ndimage.distance_transform_edt(largest).max()
    return largest.sum() / width**2


def test_river_is_elongated_and_the_lake_compact_with_a_shore(scenes):
    for scene in scenes:
        river = scene.label == scene.class_names.index("river")
        assert _elongation(river) > 5
    lake = generate_vocab_scene(256, seed=1, classes=["grassland", "water body", "lake shore"])
    water = lake.label == 1
    assert _elongation(water) < 1.5
    shore = lake.label == 2
    distance_m = ndimage.distance_transform_edt(~water) * lake.grid.pixel_size_m
    assert shore.any() and np.percentile(distance_m[shore], 95) < 15
    # Without water the shore still appears, along a lake beyond the scene edge.
    beach = generate_vocab_scene(256, seed=1, classes=["grassland", "lake shore"])
    assert (beach.label == 1).mean() > 0.005


def test_parking_lots_have_painted_stall_lines_and_sports_fields_white_lines():
    scene = generate_vocab_scene(192, seed=4, classes=["grassland", "parking lot", "sports field"],
                                 gsd_m=0.3)
    grey = scene.image.mean(0)
    for index in (1, 2):
        inside = scene.label == index
        assert inside.any()
        bright = grey[inside] > 0.45
        assert 0.005 < bright.mean() < 0.3, scene.class_names[index]


def test_write_vocab_scene_writes_georeferenced_named_cogs(tmp_path):
    import rasterio

    from eokit.core.raster import read_category_names

    scene = generate_vocab_scene(48, seed=0, classes=["grassland", "road", "building"])
    paths = write_vocab_scene(scene, tmp_path / "s")
    with rasterio.open(paths["image"]) as src:
        assert src.count == 3 and src.crs == scene.grid.crs
        assert np.allclose(src.read(), scene.image)
    with rasterio.open(paths["label"]) as src:
        assert np.array_equal(src.read(1), scene.label)
        assert src.colormap(1)[0][:3] == vocab_class("grassland").rgb
    assert read_category_names(paths["label"]) == {0: "grassland", 1: "road", 2: "building"}
    legend = json.loads(paths["classes"].read_text())
    assert [c["name"] for c in legend["classes"]] == list(scene.class_names)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        write_vocab_scene(scene, blocker)


def test_cli_writes_scenes_and_reports_bad_classes(tmp_path, capsys):
    from eokit.cli import main

    out = tmp_path / "v"
    main(["synth", "vocab", "-o", str(out), "--count", "2", "--size", "32",
          "--classes", "grassland,road"])
    assert sorted(p.name for p in out.iterdir()) == ["scene_0000", "scene_0001"]
    assert (out / "scene_0001" / "label.tif").is_file()
    with pytest.raises(SystemExit) as done:
        main(["synth", "vocab", "-o", str(tmp_path / "w"), "--classes", "grassland,lava"])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "lava" in err and len(err.splitlines()) == 1


def test_quicklook_has_a_legend_of_the_shown_classes(scenes):
    figure = quicklook_figure(scenes[:2])
    labels = [t.get_text() for t in figure.legends[0].get_texts()]
    assert set(labels) <= set(VOCABULARY_NAMES) and len(labels) >= 12
