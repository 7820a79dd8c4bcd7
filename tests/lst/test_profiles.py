import numpy as np
import pytest

from eokit.core.errors import InputError
from eokit.lst.profiles import (
    STANDARD_ATMOSPHERES,
    read_level_table,
    read_tigr,
    standard_atmosphere,
    water_vapour_column,
)


def test_tigr_reader_round_trip(tigr_file):
    profiles = read_tigr(tigr_file)
    assert len(profiles) == 3 and profiles.levels == 43
    expected = [standard_atmosphere(n) for n in ("tropical", "midlat_winter", "subarctic_summer")]
    for i, atm in enumerate(expected):
        assert np.allclose(profiles.temperature_k[i], atm.temperature_k[0], rtol=1e-5)
        assert profiles.water_vapour_column()[i] == pytest.approx(
            atm.water_vapour_column()[0], rel=5e-3
        )
    assert list(profiles.ids) == [1, 2, 3]
    assert profiles.latitude[1] == pytest.approx(10.0)


def test_tigr_wrong_level_count_is_one_line_error(tmp_path, tigr_text):
    atm = standard_atmosphere("us76")
    text = tigr_text([(atm.temperature_k[0][:42], atm.h2o[0][:42], atm.o3[0][:42])], levels=42)
    path = tmp_path / "short.dsf"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        read_tigr(path)
    message = str(info.value)
    assert "short.dsf" in message and "42 levels" in message and "\n" not in message


def test_tigr_missing_and_garbage(tmp_path):
    with pytest.raises(InputError, match="missing.dsf"):
        read_tigr(tmp_path / "missing.dsf")
    path = tmp_path / "garbage.dsf"
    path.write_text("hello world\n")
    with pytest.raises(InputError, match="garbage.dsf"):
        read_tigr(path)


def test_level_table_splits_profiles(tmp_path):
    atm = standard_atmosphere("midlat_summer")
    p, t, q = atm.pressure_hpa[0], atm.temperature_k[0], atm.h2o[0] / (1 + atm.h2o[0])
    rows = [f"0\t{pi}\t{ti}\t{qi}" for _ in range(2) for pi, ti, qi in zip(p, t, q, strict=True)]
    path = tmp_path / "levels.tsv"
    path.write_text("\n".join(rows))
    profiles = read_level_table(path)
    assert len(profiles) == 2 and profiles.levels == p.size
    assert profiles.water_vapour_column()[0] == pytest.approx(2.924, rel=1e-3)
    path.write_text("\n".join(rows[:-1]))
    with pytest.raises(InputError, match="level counts"):
        read_level_table(path)


@pytest.mark.parametrize("name", STANDARD_ATMOSPHERES)
def test_standard_atmospheres_are_physical(name):
    atm = standard_atmosphere(name)
    assert np.all(np.diff(atm.pressure_hpa[0]) > 0)
    assert 180 < atm.temperature_k.min() and atm.temperature_k.max() < 310
    assert atm.clear_sky_mask()[0]
    assert (atm.relative_humidity() < 1.0).all()


def test_water_vapour_column_of_uniform_humidity():
    # q = 0.01 everywhere from 0 to 1000 hPa: w = 0.01 * 1e5 Pa / g / 10 = 10.2 g cm-2
    p = np.linspace(0, 1000, 101)
    mixing = np.full_like(p, 0.01 / 0.99)
    assert water_vapour_column(p, mixing) == pytest.approx(0.01 * 1e5 / 9.80665 / 10, rel=1e-6)
    with pytest.raises(InputError):
        standard_atmosphere("martian")


def test_tigr2000_offline_without_cache_is_one_line_error(tmp_path, monkeypatch, tigr_file):
    from eokit.lst.profiles import load_tigr2000

    monkeypatch.setenv("EOKIT_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(InputError) as info:
        load_tigr2000(offline=True)
    assert "EOKIT_OFFLINE" in str(info.value) or "offline" in str(info.value).lower()
    assert "\n" not in str(info.value)
    assert len(load_tigr2000(tigr_file)) == 3  # a local file needs no cache
