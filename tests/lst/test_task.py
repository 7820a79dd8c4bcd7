import numpy as np
import torch

from eokit.lst.baselines import SingleChannel
from eokit.lst.data import generate_samples, split_profiles
from eokit.lst.model import PhysicsInformedLST
from eokit.lst.profiles import concatenate, standard_atmosphere
from eokit.lst.rt import rte_inverse
from eokit.lst.task import load_network, predict, train_retrieval


def small_samples():
    names = ("tropical", "midlat_summer", "midlat_winter", "subarctic_summer", "us76")
    profiles = concatenate([standard_atmosphere(n) for n in names])
    return profiles, generate_samples(profiles, per_profile=40, seed=0)


def test_samples_split_by_profile_and_physical():
    profiles, samples = small_samples()
    split = split_profiles(len(profiles), fractions=(0.6, 0.2, 0.2), seed=0)
    per_sample = split[samples.profile_index]
    for s in range(3):  # every profile lies in exactly one split
        assert set(samples.profile_index[per_sample == s]).isdisjoint(
            samples.profile_index[per_sample != s]
        )
    a = samples.arrays
    assert np.all((a["tau"] > 0) & (a["tau"] <= 1)) and np.all(a["emissivity"] >= 0.9)
    back = rte_inverse(
        a["radiance"].astype(np.float64),
        a["emissivity"],
        a["tau"],
        a["up"],
        a["down"],
        PhysicsInformedLST().band,
    )
    assert np.abs(back - a["surface_temperature"]).max() < 0.1  # band-effective vs spectral RTE


def test_piml_starts_as_rte_inversion_with_prior_atmosphere():
    _, samples = small_samples()
    a = samples.arrays
    prior = SingleChannel.fit(a["water_vapour"], a["tau"], a["up"], a["down"]).coefficients
    net = PhysicsInformedLST(prior=prior)
    net.set_normalisation(samples.features())
    x = torch.as_tensor(samples.features())
    out = net(x)
    tau, up, down = net.first_guess(x[:, 1])
    assert torch.allclose(out["tau"], tau, atol=1e-4)
    expected = rte_inverse(
        net.band.radiance(x[:, 0].double()),
        x[:, 2].double(),
        tau.double(),
        out["up"].double(),
        out["down"].double(),
        net.band,
    )
    assert torch.allclose(out["ts"].double(), expected, atol=1e-3)


def test_training_reduces_error_and_round_trips(tmp_path):
    _, samples = small_samples()
    a = samples.arrays
    target = a["surface_temperature"]
    mlp_before = np.sqrt(np.mean((a["bt"] - target) ** 2))  # the MLP starts near Ts = BT
    mlp = train_retrieval(
        samples, None, tmp_path / "mlp", kind="mlp", epochs=4, progress=False, batch_size=128
    )
    assert np.sqrt(np.mean((predict(mlp, samples.features()) - target) ** 2)) < mlp_before
    prior = SingleChannel.fit(a["water_vapour"], a["tau"], a["up"], a["down"]).coefficients
    trained = train_retrieval(
        samples,
        samples,
        tmp_path,
        kind="piml",
        epochs=1,
        prior=prior,
        progress=False,
        batch_size=128,
    )
    loaded = load_network(tmp_path / "piml.safetensors")
    assert isinstance(loaded, PhysicsInformedLST)
    assert np.allclose(
        predict(loaded, samples.features()), predict(trained, samples.features()), atol=1e-4
    )
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
