"""Posterior store: dihedral equivariance, per-image Adam state, ELBO improvement, fingerprint."""

from __future__ import annotations

import pytest
import torch

from eokit.core.errors import InputError
from eokit.noisy.store import PosteriorStore, apply_op, invert_op, random_ops

KW = {"mu": -2.0, "sigma": 1.3, "rho_prior": 0.75, "rho_post": 0.75}


@pytest.mark.parametrize("op", range(8))
def test_ops_invert(op: int) -> None:
    x = torch.arange(2 * 4 * 4.0).reshape(2, 4, 4)
    assert torch.equal(invert_op(apply_op(x, op), op), x)


def test_non_square_images_only_flip() -> None:
    ops = random_ops(200, square=False, generator=torch.Generator().manual_seed(0))
    assert set(op & 3 for op in ops) <= {0, 2}
    x = torch.zeros(3, 5)
    assert all(apply_op(x, op).shape == (3, 5) for op in ops)


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    log_probs = torch.log_softmax(torch.randn(2, 2, 6, 6, generator=gen) * 3, 1)
    labels = torch.randint(0, 2, (2, 6, 6), generator=gen)
    return log_probs, labels


@pytest.mark.parametrize("ops", [[1, 6], [4, 3], [2, 7]])
def test_e_step_is_equivariant(ops: list[int]) -> None:
    log_probs, labels = _inputs()
    idx = torch.tensor([0, 2])
    plain = PosteriorStore(3, (6, 6))
    plain.e_step(idx, [0, 0], log_probs, labels, None, steps=5, lr=0.1,
                 generator=torch.Generator().manual_seed(1), **KW)
    turned = PosteriorStore(3, (6, 6))
    lp = torch.stack([apply_op(log_probs[i], op) for i, op in enumerate(ops)])
    lb = torch.stack([apply_op(labels[i], op) for i, op in enumerate(ops)])
    turned.e_step(idx, ops, lp, lb, None, steps=5, lr=0.1,
                  generator=torch.Generator().manual_seed(1), **KW)
    torch.testing.assert_close(turned.params, plain.params, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(turned.exp_avg_sq, plain.exp_avg_sq, rtol=1e-5, atol=1e-9)
    m, _ = turned.get(idx, ops)
    torch.testing.assert_close(m[1], apply_op(plain.params[2, 0], ops[1]))


def test_untouched_images_stay_and_adam_state_persists() -> None:
    log_probs, labels = _inputs()
    store = PosteriorStore(3, (6, 6))
    before = store.params.clone()
    idx = torch.tensor([0, 1])
    store.e_step(idx, [0, 0], log_probs, labels, None, steps=3, lr=0.1,
                 generator=torch.Generator().manual_seed(9), **KW)
    assert torch.equal(store.params[2], before[2])
    assert store.steps.tolist() == [3, 3, 0]
    moments = store.exp_avg[:2].clone()
    assert moments.abs().sum() > 0
    store.e_step(idx, [0, 0], log_probs, labels, None, steps=1, lr=0.1,
                 generator=torch.Generator().manual_seed(9), **KW)
    assert store.steps.tolist() == [4, 4, 0]
    # a store whose moments restart every batch (the reference behaviour) moves differently
    reset = PosteriorStore(3, (6, 6))
    reset.e_step(idx, [0, 0], log_probs, labels, None, steps=3, lr=0.1,
                 generator=torch.Generator().manual_seed(9), **KW)
    reset.exp_avg.zero_()
    reset.exp_avg_sq.zero_()
    reset.steps.zero_()
    reset.e_step(idx, [0, 0], log_probs, labels, None, steps=1, lr=0.1,
                 generator=torch.Generator().manual_seed(9), **KW)
    assert not torch.allclose(reset.params, store.params)
    assert store.exp_avg[:2].abs().sum() > 0 and not torch.equal(store.exp_avg[:2], moments)


def test_e_step_raises_the_elbo_and_finds_label_errors() -> None:
    # the network is sure of class 0 everywhere; the label says 1 in a block: the posterior
    # error probability must rise there and stay low elsewhere
    log_probs = torch.log_softmax(torch.tensor([4.0, -4.0])[None, :, None, None]
                                  .expand(1, 2, 12, 12).clone(), 1)
    labels = torch.zeros(1, 12, 12, dtype=torch.int64)
    labels[0, 3:8, 3:8] = 1
    store = PosteriorStore(1, (12, 12))
    idx = torch.tensor([0])
    first = store.e_step(idx, [0], log_probs, labels, None, steps=1, lr=0.1, **KW)
    last = store.e_step(idx, [0], log_probs, labels, None, steps=100, lr=0.1, **KW)
    assert last.item() > first.item()
    error = store.error_probability(0)
    assert error[3:8, 3:8].mean() > 0.5 > error[10:, 10:].mean()


def test_fingerprint_mismatch_refused() -> None:
    store = PosteriorStore(2, (4, 4), fingerprint="abc123")
    assert store.fingerprint_text() == "abc123"
    store.check_fingerprint("abc123")
    with pytest.raises(InputError, match="another training set"):
        store.check_fingerprint("zzz")
