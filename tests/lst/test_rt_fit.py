"""Reference RT tables pair with profile files by content; a shifted pairing is an error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eokit.core.errors import InputError
from eokit.lst.profiles import specific_humidity, standard_atmosphere
from eokit.lst.rt import BandRTModel
from eokit.lst.rt_fit import match_tables, read_reference_month, read_reference_table

MODEL = BandRTModel()
NAMES = ("tropical", "midlat_summer", "midlat_winter", "subarctic_summer", "subarctic_winter",
         "us76")


def _write_month(folder, month, seed, n=14):
    """A profile file of ``n`` perturbed standard atmospheres; returns (T, q) per profile."""
    rng = np.random.default_rng(seed)
    lines, profiles = [], []
    order = rng.permutation(n)  # months differ in the order of their air masses
    for i in range(n):
        atm = standard_atmosphere(NAMES[order[i] % len(NAMES)])
        p = atm.pressure_hpa[0]
        t = atm.temperature_k[0] + rng.normal(0, 2)
        r = atm.h2o[0] * rng.uniform(0.2, 1.5)  # humidity drives τ, so rows differ by content
        q = specific_humidity(r)
        profiles.append((p, t, r))
        lines += [f"{0.0:.1f}\t{pl:.4f}\t{tl:.2f}\t{ql:.6g}" for pl, tl, ql in zip(p, t, q,
                                                                                  strict=True)]
    (folder / f"era5_antarctic_profiles_{month}.tsv").write_text("\n".join(lines) + "\n")
    return month


def _write_table(folder, table_month, profile_month, *, repeat_last=True):
    """MODTRAN-like rows ``wind Ts BT tau dBT/dTs`` simulated from ``profile_month``'s profiles."""
    from eokit.lst.profiles import read_level_table

    profiles = read_level_table(folder / f"era5_antarctic_profiles_{profile_month}.tsv")
    with torch.no_grad():
        atm = MODEL.forward_profiles(profiles)
        ts = torch.as_tensor(profiles.surface_air_temperature_k + 1.0, dtype=torch.float64)
        bt = MODEL.toa_brightness_temperature(atm, ts, 0.993)
    rows = [f"00 {a:.3f} {b:.3f} {c:.4f} 0.9" for a, b, c in
            zip(ts.numpy(), bt.numpy(), atm.tau.numpy(), strict=True)]
    if repeat_last:
        rows.append(rows[-1])
    (folder / f"modtran_b10_bt_tau_{table_month}.txt").write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def shifted(tmp_path_factory):
    """Months 01-03: table 01 holds profiles 01, table 02 profiles 03, table 03 profiles 02."""
    folder = tmp_path_factory.mktemp("espg")
    for seed, month in enumerate(("01", "02", "03")):
        _write_month(folder, month, seed)
    _write_table(folder, "01", "01")
    _write_table(folder, "02", "03")
    _write_table(folder, "03", "02")
    return folder


def test_matching_pair_reads_and_drops_the_repeated_row(shifted):
    ref = read_reference_month(shifted, "01", model=MODEL)
    assert len(ref.tau) == 14 == len(ref.profiles)
    assert len(read_reference_table(shifted / "modtran_b10_bt_tau_01.txt")) == 14


def test_shifted_table_is_detected_and_named(shifted):
    with pytest.raises(InputError) as info:
        read_reference_month(shifted, "02", model=MODEL)
    message = str(info.value)
    assert message.startswith(str(shifted / "modtran_b10_bt_tau_02.txt"))
    assert "by content it matches era5_antarctic_profiles_03.tsv" in message
    assert "match modtran_b10_bt_tau_03.txt (pass table_month='03')" in message


def test_content_pairing_recovers_the_shifted_months(shifted):
    pairs = {t: info["profiles"] for t, info in match_tables(shifted, model=MODEL).items()}
    assert pairs == {"01": "01", "02": "03", "03": "02"}
    ref = read_reference_month(shifted, "02", table_month="03", model=MODEL)
    assert ref.label == "modtran:02(table 03)" and len(ref.tau) == 14


def test_row_count_mismatch_is_detected(tmp_path):
    _write_month(tmp_path, "01", 0, n=14)
    _write_month(tmp_path, "02", 1, n=12)
    _write_table(tmp_path, "01", "02")  # 12 rows for 14 profiles
    with pytest.raises(InputError, match="12 rows for 14 profiles") as info:
        read_reference_month(tmp_path, "01", model=MODEL)
    assert "matches era5_antarctic_profiles_02.tsv" in str(info.value)
    assert "no modtran table in the folder matches era5_antarctic_profiles_01.tsv" in str(
        info.value)
