"""Kac-Murdock-Szego (KMS) Kronecker Gaussian fields: exact O(HW) maths for the noisy-label ELBO.

A KMS matrix of size n is ``R_ab = rho^|a-b|``. An image field of shape (H, W), flattened row-major,
gets the covariance ``R_H(rho) (x) R_W(rho)``. Its inverse is a Kronecker product of two tridiagonal
matrices, so every quantity of the ELBO is a product of two one-dimensional three-point operators
(together a 3x3 stencil): no N x N matrix is ever formed, for any H != W and any rho in [0, 1).

Conventions (one for the sample and the KL terms alike):

* prior ``p(eta) = N(mu, s^2 R_H (x) R_W)``: ``s`` is the marginal standard deviation;
* posterior ``q(eta) = N(m, D R'_H (x) R'_W D)`` with ``D = diag(g)``: ``g`` is the per-pixel
  marginal **standard deviation** (not the variance); a sample is ``m + g * z`` with
  ``z ~ N(0, R'_H (x) R'_W)`` drawn through the AR(1) factor of each axis.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from eokit.core.errors import InputError

__all__ = [
    "check_rho",
    "kms_entropy",
    "kms_inverse_diagonal",
    "kms_kl",
    "kms_log_det",
    "kms_matrix",
    "kms_precision_apply",
    "kms_prior_log_prob_expectation",
    "kms_quadratic",
    "kms_trace_term",
    "noisy_label_elbo",
    "noisy_label_expected_log_lik",
    "sample_kms",
]


def check_rho(rho: float, name: str = "rho") -> float:
    """Return ``rho`` as float, refusing values outside [0, 1) (the KMS matrix is singular at 1)."""
    value = float(rho)
    if not (0.0 <= value < 1.0) or math.isnan(value):
        raise InputError(f"must lie in [0, 1), got {rho}", parameter=name)
    return value


def kms_matrix(n: int, rho: float, *, dtype: torch.dtype = torch.float64) -> Tensor:
    """Dense KMS matrix ``rho^|a-b|`` of size n (for tests and small references only)."""
    idx = torch.arange(n, dtype=dtype)
    return torch.tensor(rho, dtype=dtype) ** (idx[:, None] - idx[None, :]).abs()


def kms_inverse_diagonal(n: int, rho: float, *, dtype: torch.dtype = torch.float32,
                         device: torch.device | None = None) -> tuple[Tensor, float]:
    """Diagonal and off-diagonal of the tridiagonal inverse of an n x n KMS matrix.

    ``R^-1 = tridiag(-rho, [1, 1+rho^2, ..., 1+rho^2, 1], -rho) / (1 - rho^2)``; for n = 1 the
    inverse is 1.

    Returns:
        ``(diag (n,), off)``: the diagonal vector and the constant off-diagonal value.
    """
    rho = check_rho(rho)
    scale = 1.0 / (1.0 - rho * rho)
    diag = torch.full((n,), (1.0 + rho * rho) * scale, dtype=dtype, device=device)
    # each end of the chain misses one neighbour, which removes one rho^2 from its diagonal
    diag[0] -= rho * rho * scale
    diag[-1] -= rho * rho * scale
    return diag, -rho * scale


def _tridiag_apply(x: Tensor, diag: Tensor, off: float, dim: int) -> Tensor:
    """Multiply ``x`` along ``dim`` by the symmetric tridiagonal matrix (diag, constant off)."""
    x = x.movedim(dim, -1)
    out = x * diag
    if x.shape[-1] > 1 and off != 0.0:
        out = out.clone()
        out[..., 1:] += off * x[..., :-1]
        out[..., :-1] += off * x[..., 1:]
    return out.movedim(-1, dim)


def _kron_tridiag_apply(x: Tensor, rows: tuple[Tensor, float],
                        cols: tuple[Tensor, float]) -> Tensor:
    """Apply ``T_H (x) T_W`` to fields ``x`` (..., H, W) (row-major vectorisation)."""
    return _tridiag_apply(_tridiag_apply(x, rows[0], rows[1], -2), cols[0], cols[1], -1)


def kms_precision_apply(x: Tensor, rho: float) -> Tensor:
    """``(R_H(rho) (x) R_W(rho))^-1 x`` for fields ``x`` of shape (..., H, W), in O(HW)."""
    h, w = x.shape[-2:]
    rows = kms_inverse_diagonal(h, rho, dtype=x.dtype, device=x.device)
    cols = kms_inverse_diagonal(w, rho, dtype=x.dtype, device=x.device)
    return _kron_tridiag_apply(x, rows, cols)


def kms_log_det(height: int, width: int, rho: float) -> float:
    """``log |R_H(rho) (x) R_W(rho)|`` = ``[W (H-1) + H (W-1)] log(1 - rho^2)`` (any H, W)."""
    rho = check_rho(rho)
    return float((width * (height - 1) + height * (width - 1)) * math.log1p(-rho * rho))


def kms_quadratic(x: Tensor, rho: float) -> Tensor:
    """``x^T (R_H (x) R_W)^-1 x`` per field: (..., H, W) -> (...)."""
    return (x * kms_precision_apply(x, rho)).sum(dim=(-2, -1))


def kms_trace_term(g: Tensor, rho_prior: float, rho_post: float) -> Tensor:
    """``tr[(R_H (x) R_W)(rho_prior)^-1 D (R_H (x) R_W)(rho_post) D]`` with ``D = diag(g)``.

    Since the trace equals ``g^T (P o R') g`` (``o``: elementwise product) and the elementwise
    product of two Kronecker products is the Kronecker product of the elementwise products, the
    term is a quadratic form with two tridiagonal factors: the prior precision's band times
    ``rho_post`` on the off-diagonals.

    Args:
        g: Posterior marginal standard deviations (..., H, W), > 0.
        rho_prior: Prior correlation.
        rho_post: Posterior correlation.

    Returns:
        (...) trace per field.
    """
    rho_post = check_rho(rho_post, "rho_post")
    h, w = g.shape[-2:]
    dh, oh = kms_inverse_diagonal(h, rho_prior, dtype=g.dtype, device=g.device)
    dw, ow = kms_inverse_diagonal(w, rho_prior, dtype=g.dtype, device=g.device)
    product = _kron_tridiag_apply(g, (dh, oh * rho_post), (dw, ow * rho_post))
    return (g * product).sum(dim=(-2, -1))


def kms_kl(m: Tensor, g: Tensor, mu: Tensor | float, sigma: float, rho_prior: float,
           rho_post: float) -> Tensor:
    """``KL(q || p)`` for ``q = N(m, D R'(rho_post) D)``, ``p = N(mu, sigma^2 R(rho_prior))``.

    Args:
        m: Posterior mean (..., H, W).
        g: Posterior marginal standard deviation (..., H, W), > 0.
        mu: Prior mean (scalar or broadcastable field).
        sigma: Prior marginal standard deviation, > 0.
        rho_prior: Prior correlation in [0, 1).
        rho_post: Posterior correlation in [0, 1).

    Returns:
        (...) KL divergence in nats per field (not normalised by the pixel count).
    """
    if sigma <= 0:
        raise InputError(f"sigma must be > 0, got {sigma}", parameter="sigma")
    h, w = m.shape[-2:]
    n = h * w
    var = sigma * sigma
    quad = kms_quadratic(m - mu, rho_prior) / var
    trace = kms_trace_term(g, rho_prior, rho_post) / var
    log_det_prior = n * math.log(var) + kms_log_det(h, w, rho_prior)
    log_det_post = 2.0 * torch.log(g).sum(dim=(-2, -1)) + kms_log_det(h, w, rho_post)
    return 0.5 * (trace + quad - n + log_det_prior - log_det_post)


def kms_prior_log_prob_expectation(m: Tensor, g: Tensor, mu: Tensor | float, sigma: float,
                                   rho_prior: float, rho_post: float) -> Tensor:
    """``E_q[log p(eta)]`` (the cross-entropy term of the ELBO), per field."""
    h, w = m.shape[-2:]
    n = h * w
    var = sigma * sigma
    quad = kms_quadratic(m - mu, rho_prior) / var
    trace = kms_trace_term(g, rho_prior, rho_post) / var
    log_det_prior = n * math.log(var) + kms_log_det(h, w, rho_prior)
    return -0.5 * (quad + trace + n * math.log(2 * math.pi) + log_det_prior)


def kms_entropy(g: Tensor, rho_post: float) -> Tensor:
    """Entropy ``H[q]`` of ``N(m, D R'(rho_post) D)`` per field (..., H, W) -> (...)."""
    h, w = g.shape[-2:]
    n = h * w
    log_det = 2.0 * torch.log(g).sum(dim=(-2, -1)) + kms_log_det(h, w, rho_post)
    return 0.5 * (log_det + n * (1.0 + math.log(2 * math.pi)))


def _ar1_filter(noise: Tensor, rho: float, dim: int) -> Tensor:
    """Turn i.i.d. N(0, 1) along ``dim`` into an AR(1) chain with covariance ``rho^|a-b|``.

    This is multiplication by the lower Cholesky factor of the KMS matrix, in O(n) per line.
    """
    x = noise.movedim(dim, 0)
    if rho == 0.0:
        return x.movedim(0, dim).clone()
    innovation = math.sqrt(1.0 - rho * rho)
    out = torch.empty_like(x)
    out[0] = x[0]
    for i in range(1, x.shape[0]):
        out[i] = rho * out[i - 1] + innovation * x[i]
    return out.movedim(0, dim)


def sample_kms(shape: tuple[int, ...], rho: float, *, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> Tensor:
    """Draw fields ``z ~ N(0, R_H(rho) (x) R_W(rho))`` of shape (..., H, W).

    Args:
        shape: Output shape; the last two axes are the grid.
        rho: Correlation in [0, 1).
        generator: Torch generator for reproducible draws.
        dtype: Output dtype.
        device: Output device.

    Returns:
        Standard-normal-marginal correlated fields.
    """
    rho = check_rho(rho)
    if len(shape) < 2:
        raise InputError(f"shape needs at least two axes (H, W), got {shape}", parameter="shape")
    noise = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    return _ar1_filter(_ar1_filter(noise, rho, -2), rho, -1)


def noisy_label_expected_log_lik(log_probs: Tensor, labels: Tensor, error_logit: Tensor,
                                 valid: Tensor | None = None) -> Tensor:
    """Soft-label cross-entropy term ``sum_i sum_k q(y*=k | y, eta) log p_theta(k | x)``.

    ``q(y* = y | y, eta) = 1 - r`` and ``r / (K - 1)`` for every other class, ``r = sigmoid(eta)``.
    The likelihood and ``log q(y*)`` terms of the ELBO cancel exactly (they have the same form),
    so this is the only label term left.

    Args:
        log_probs: (B, K, H, W) log class probabilities (``log_softmax`` of the logits).
        labels: (B, H, W) int64 observed labels in [0, K).
        error_logit: (B, H, W) sampled error logits ``eta``.
        valid: (B, H, W) bool, pixels that count (ignore value and nodata excluded).

    Returns:
        (B,) sum over valid pixels.
    """
    k = log_probs.shape[1]
    if k < 2:
        raise InputError(f"need at least 2 classes, got {k}", parameter="classes")
    safe = labels.clamp(0, k - 1)
    log_p_label = log_probs.gather(1, safe[:, None]).squeeze(1)
    log_p_others = log_probs.sum(dim=1) - log_p_label
    r = torch.sigmoid(error_logit)
    term = (1.0 - r) * log_p_label + r / (k - 1) * log_p_others
    if valid is not None:
        term = term * valid.to(term.dtype)
    return term.sum(dim=(-2, -1))


def noisy_label_elbo(log_probs: Tensor, labels: Tensor, m: Tensor, g: Tensor, z: Tensor, *,
                     mu: float, sigma: float, rho_prior: float, rho_post: float,
                     valid: Tensor | None = None) -> Tensor:
    """One-sample ELBO per image, divided by the pixel count: ``E_q[soft CE] - KL(q || p)``.

    Args:
        log_probs: (B, K, H, W) log class probabilities of the network.
        labels: (B, H, W) observed labels.
        m: (B, H, W) posterior means of the error logit.
        g: (B, H, W) posterior marginal standard deviations (> 0).
        z: (B, H, W) a draw of ``N(0, R'_H (x) R'_W)`` (:func:`sample_kms` with ``rho_post``);
            the reparameterised sample is ``eta = m + g * z``.
        mu: Prior mean of the error logit.
        sigma: Prior marginal standard deviation.
        rho_prior: Prior correlation.
        rho_post: Posterior correlation.
        valid: (B, H, W) bool mask of labelled pixels.

    Returns:
        (B,) ELBO per pixel (higher is better).
    """
    n = labels.shape[-2] * labels.shape[-1]
    eta = m + g * z
    lik = noisy_label_expected_log_lik(log_probs, labels, eta, valid)
    kl = kms_kl(m, g, mu, sigma, rho_prior, rho_post)
    return (lik - kl) / n
