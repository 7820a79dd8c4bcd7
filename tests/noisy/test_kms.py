"""KMS stencil maths against dense torch.linalg references on small rectangular grids."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from eokit.core.errors import InputError
from eokit.noisy import kms

SHAPES = [(5, 7), (7, 5), (1, 6), (4, 1), (3, 3)]
RHOS = [0.0, 0.3, 0.75, 0.99]


def dense_cov(h: int, w: int, rho: float) -> torch.Tensor:
    return torch.kron(kms.kms_matrix(h, rho), kms.kms_matrix(w, rho))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("rho", RHOS)
def test_precision_apply_equals_dense_solve(shape: tuple[int, int], rho: float) -> None:
    h, w = shape
    x = torch.randn(2, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got = kms.kms_precision_apply(x, rho).reshape(2, -1)
    want = torch.linalg.solve(dense_cov(h, w, rho), x.reshape(2, -1).T).T
    torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("rho", RHOS)
def test_log_det_equals_slogdet(shape: tuple[int, int], rho: float) -> None:
    sign, logdet = torch.linalg.slogdet(dense_cov(*shape, rho))
    assert sign.item() == 1.0
    assert kms.kms_log_det(*shape, rho) == pytest.approx(logdet.item(), abs=1e-7)


@pytest.mark.parametrize("shape", [(5, 7), (6, 4)])
@pytest.mark.parametrize(("rho_p", "rho_q"), [(0.75, 0.75), (0.5, 0.2), (0.0, 0.9), (0.9, 0.0)])
def test_trace_equals_dense(shape: tuple[int, int], rho_p: float, rho_q: float) -> None:
    h, w = shape
    g = torch.rand(h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) + 0.2
    gamma = torch.diag(g.flatten()) @ dense_cov(h, w, rho_q) @ torch.diag(g.flatten())
    want = torch.trace(torch.linalg.solve(dense_cov(h, w, rho_p), gamma))
    torch.testing.assert_close(kms.kms_trace_term(g, rho_p, rho_q), want, rtol=1e-9, atol=1e-9)


def _dense_q_p(m: torch.Tensor, g: torch.Tensor, mu: float, sigma: float, rho_p: float,
               rho_q: float) -> tuple[MultivariateNormal, MultivariateNormal]:
    h, w = m.shape
    d = torch.diag(g.flatten())
    q = MultivariateNormal(m.flatten(), d @ dense_cov(h, w, rho_q) @ d)
    p = MultivariateNormal(torch.full((h * w,), mu, dtype=m.dtype),
                           sigma**2 * dense_cov(h, w, rho_p))
    return q, p


@pytest.mark.parametrize("shape", [(5, 7), (7, 5), (2, 9)])
@pytest.mark.parametrize(("rho_p", "rho_q"), [(0.75, 0.75), (0.3, 0.6), (0.0, 0.0)])
def test_kl_entropy_cross_entropy_equal_dense(shape: tuple[int, int], rho_p: float,
                                              rho_q: float) -> None:
    gen = torch.Generator().manual_seed(3)
    m = torch.randn(shape, dtype=torch.float64, generator=gen) - 3
    g = torch.rand(shape, dtype=torch.float64, generator=gen) + 0.3
    q, p = _dense_q_p(m, g, -2.0, 1.3, rho_p, rho_q)
    torch.testing.assert_close(kms.kms_kl(m, g, -2.0, 1.3, rho_p, rho_q), kl_divergence(q, p))
    torch.testing.assert_close(kms.kms_entropy(g, rho_q), q.entropy())
    cross = kms.kms_prior_log_prob_expectation(m, g, -2.0, 1.3, rho_p, rho_q)
    torch.testing.assert_close(cross, -q.entropy() - kl_divergence(q, p))


def test_kl_zero_when_posterior_equals_prior() -> None:
    m = torch.full((5, 7), -2.0, dtype=torch.float64)
    g = torch.full((5, 7), 1.3, dtype=torch.float64)
    assert kms.kms_kl(m, g, -2.0, 1.3, 0.75, 0.75).item() == pytest.approx(0.0, abs=1e-10)
    # and positive as soon as any of the three differs
    assert kms.kms_kl(m + 0.1, g, -2.0, 1.3, 0.75, 0.75).item() > 1e-4
    assert kms.kms_kl(m, g * 1.1, -2.0, 1.3, 0.75, 0.75).item() > 1e-4
    assert kms.kms_kl(m, g, -2.0, 1.3, 0.75, 0.5).item() > 1e-4


def test_rho_zero_is_the_independent_model() -> None:
    gen = torch.Generator().manual_seed(4)
    m = torch.randn(4, 6, dtype=torch.float64, generator=gen)
    g = torch.rand(4, 6, dtype=torch.float64, generator=gen) + 0.1
    independent = kl_divergence(Normal(m, g), Normal(torch.tensor(-1.0, dtype=torch.float64),
                                                     torch.tensor(0.8, dtype=torch.float64)))
    torch.testing.assert_close(kms.kms_kl(m, g, -1.0, 0.8, 0.0, 0.0), independent.sum())


def test_whole_elbo_equals_dense_computation() -> None:
    gen = torch.Generator().manual_seed(5)
    h, w, k = 5, 7, 3
    logits = torch.randn(2, k, h, w, dtype=torch.float64, generator=gen) * 3
    labels = torch.randint(0, k, (2, h, w), generator=gen)
    m = torch.randn(2, h, w, dtype=torch.float64, generator=gen) - 2
    g = torch.rand(2, h, w, dtype=torch.float64, generator=gen) + 0.2
    z = kms.sample_kms((2, h, w), 0.5, generator=gen, dtype=torch.float64)
    valid = torch.rand(2, h, w, generator=gen) > 0.2
    got = kms.noisy_label_elbo(torch.log_softmax(logits, 1), labels, m, g, z, mu=-2.0, sigma=1.3,
                               rho_prior=0.75, rho_post=0.5, valid=valid)
    for b in range(2):
        probs = torch.softmax(logits[b], 0)
        r = torch.sigmoid(m[b] + g[b] * z[b])
        lik = 0.0
        for i in range(h):
            for j in range(w):
                if not valid[b, i, j]:
                    continue
                for c in range(k):
                    weight = 1 - r[i, j] if c == labels[b, i, j] else r[i, j] / (k - 1)
                    lik = lik + weight * torch.log(probs[c, i, j])
        q, p = _dense_q_p(m[b], g[b], -2.0, 1.3, 0.75, 0.5)
        # ELBO = E[log lik] + E[log p(eta)] + H[q]; the y* terms cancel
        want = (lik + (-q.entropy() - kl_divergence(q, p)) + q.entropy()) / (h * w)
        torch.testing.assert_close(got[b], want)


def test_soft_ce_is_stable_for_huge_logits() -> None:
    logits = torch.tensor([[[[1e4]], [[-1e4]]]])
    labels = torch.tensor([[[1]]])
    value = kms.noisy_label_expected_log_lik(torch.log_softmax(logits, 1), labels,
                                             torch.tensor([[[-5.0]]]))
    assert torch.isfinite(value).all()


def test_gradcheck_kl_and_elbo() -> None:
    gen = torch.Generator().manual_seed(6)
    m = torch.randn(3, 4, dtype=torch.float64, generator=gen).requires_grad_()
    g = (torch.rand(3, 4, dtype=torch.float64, generator=gen) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: kms.kms_kl(a, b, -2.0, 1.3, 0.6, 0.4), (m, g))
    logits = torch.randn(1, 2, 3, 4, dtype=torch.float64, generator=gen).requires_grad_()
    labels = torch.randint(0, 2, (1, 3, 4), generator=gen)
    z = kms.sample_kms((1, 3, 4), 0.4, generator=gen, dtype=torch.float64)

    def elbo(lg: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return kms.noisy_label_elbo(torch.log_softmax(lg, 1), labels, a[None], b[None], z,
                                    mu=-2.0, sigma=1.3, rho_prior=0.6, rho_post=0.4)

    assert torch.autograd.gradcheck(elbo, (logits, m, g))


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_sample_covariance_is_kms(rho: float) -> None:
    h, w = 3, 4
    z = kms.sample_kms((40000, h, w), rho, generator=torch.Generator().manual_seed(7),
                       dtype=torch.float64).reshape(40000, -1)
    cov = z.T @ z / z.shape[0]
    torch.testing.assert_close(cov, dense_cov(h, w, rho), atol=0.03, rtol=0)


def test_sample_is_seeded() -> None:
    a = kms.sample_kms((2, 5, 6), 0.7, generator=torch.Generator().manual_seed(8))
    b = kms.sample_kms((2, 5, 6), 0.7, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)


@pytest.mark.parametrize("rho", [1.0, -0.1, 1.5, math.nan])
def test_rho_outside_unit_interval_refused(rho: float) -> None:
    with pytest.raises(InputError, match="rho"):
        kms.kms_log_det(3, 4, rho)
    with pytest.raises(InputError, match="rho"):
        kms.sample_kms((3, 4), rho)
