"""Per-image variational posterior store: (m, g) and their own Adam state, dihedral-equivariant."""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eokit.core.errors import InputError
from eokit.noisy.kms import noisy_label_elbo, sample_kms

logger = logging.getLogger(__name__)

__all__ = ["PosteriorStore", "apply_op", "dataset_fingerprint", "invert_op", "random_ops"]

#: softplus(1): the published initial prior/posterior standard deviation.
SOFTPLUS_ONE = math.log1p(math.e)


def apply_op(x: Tensor, op: int) -> Tensor:
    """Dihedral transform of the last two axes: ``op = 4 * flip + k`` (flip W, then rot90 k)."""
    if op & 4:
        x = x.flip(-1)
    return torch.rot90(x, op & 3, dims=(-2, -1)) if op & 3 else x


def invert_op(x: Tensor, op: int) -> Tensor:
    """Undo :func:`apply_op`."""
    if op & 3:
        x = torch.rot90(x, -(op & 3), dims=(-2, -1))
    return x.flip(-1) if op & 4 else x


def random_ops(n: int, square: bool, generator: torch.Generator | None = None) -> list[int]:
    """Random dihedral ops: all 8 for square images, flips only (k in {0, 2}) otherwise."""
    ops = torch.randint(0, 8, (n,), generator=generator).tolist()
    return [op if square else op & ~1 for op in ops]


def dataset_fingerprint(keys: Sequence[str], shape: tuple[int, int]) -> str:
    """Short hash of the training set's file keys and tile shape (a resume check)."""
    digest = hashlib.sha256(f"{shape}|".encode() + "\n".join(keys).encode("utf-8"))
    return digest.hexdigest()[:16]


class PosteriorStore(nn.Module):
    """Free variational parameters of every training image, kept between epochs.

    Holds ``m`` (posterior mean of the error logit) and ``g_raw`` (``g = softplus(g_raw)`` is the
    posterior marginal standard deviation) for each image in its stored orientation, together
    with the Adam moments and step count of each image, so an image's E-step continues where its
    last visit stopped (the reference code reset the moments every batch). Everything is a
    buffer: the Lightning checkpoint holds it and resume restores it. Augmented batches read the
    parameters through :func:`apply_op` and write them back through :func:`invert_op`.

    The store stays on the CPU in float32 whatever device or dtype the model is moved to (the
    E-step is a per-image loop; a large store would not fit in accelerator memory anyway). With
    ``storage_dir`` the three per-pixel arrays are memory-mapped ``.npy`` files there, so a
    training set larger than RAM only keeps the pages of the current batches resident; the
    checkpoint still holds a full copy, so resume works the same way.

    Args:
        num_images: Training images.
        shape: (H, W) of every training tile.
        m_init: Initial posterior mean (published: -5).
        g_init: Initial posterior standard deviation (published: softplus(1)).
        fingerprint: Identifier of the training set (:func:`dataset_fingerprint`).
        storage_dir: Folder for memory-mapped arrays (None: in memory). Existing files there
            are overwritten with the initial state; resume restores the checkpoint's copy.
    """

    params: Tensor
    exp_avg: Tensor
    exp_avg_sq: Tensor
    steps: Tensor
    fingerprint: Tensor

    def __init__(self, num_images: int, shape: tuple[int, int], *, m_init: float = -5.0,
                 g_init: float = SOFTPLUS_ONE, fingerprint: str = "",
                 storage_dir: str | Path | None = None) -> None:
        super().__init__()
        if num_images < 1:
            raise InputError("the training set is empty", parameter="images")
        if g_init <= 0:
            raise InputError(f"must be > 0, got {g_init}", parameter="g_init")
        h, w = shape
        g_raw = g_init + math.log(-math.expm1(-g_init))  # softplus^-1
        shape4 = (num_images, 2, h, w)
        self.storage_dir = None if storage_dir is None else Path(storage_dir)
        params, exp_avg, exp_avg_sq = (self._array(name, shape4)
                                       for name in ("params", "exp_avg", "exp_avg_sq"))
        params[:, 0] = m_init
        params[:, 1] = g_raw
        self.register_buffer("params", params)
        self.register_buffer("exp_avg", exp_avg)
        self.register_buffer("exp_avg_sq", exp_avg_sq)
        self.register_buffer("steps", torch.zeros(num_images, dtype=torch.int64))
        self.register_buffer("fingerprint", _encode(fingerprint))
        self.shape = (h, w)

    def _array(self, name: str, shape: tuple[int, ...]) -> Tensor:
        if self.storage_dir is None:
            return torch.zeros(shape)
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        path = self.storage_dir / f"{name}.npy"
        try:
            array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
        except OSError as exc:
            raise InputError(f"cannot create the memory-mapped posterior store: {exc.strerror}",
                             path=path) from None
        return torch.from_numpy(array)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> PosteriorStore:
        # Model moves (.to(device), .half(), Lightning's device placement) leave the store on
        # the CPU in float32: it is read and written per image by the E-step on the host.
        return self

    def fingerprint_text(self) -> str:
        """The stored training-set fingerprint."""
        return bytes(self.fingerprint.tolist()).decode("ascii").rstrip("\0")

    def check_fingerprint(self, expected: str) -> None:
        """Refuse a store (from a checkpoint) that belongs to another training set."""
        stored = self.fingerprint_text()
        if stored and expected and stored != expected:
            raise InputError(f"posterior store belongs to another training set (fingerprint "
                             f"{stored}, this set {expected}); start a new run folder",
                             parameter="resume")

    def get(self, indices: Tensor, ops: Sequence[int]) -> tuple[Tensor, Tensor]:
        """``(m, g)`` of ``indices`` in the augmented frames: each (B, H', W')."""
        ms, gs = [], []
        for i, op in zip(indices.tolist(), ops, strict=True):
            p = apply_op(self.params[i], op)
            ms.append(p[0])
            gs.append(F.softplus(p[1]))
        return torch.stack(ms), torch.stack(gs)

    def error_probability(self, index: int) -> Tensor:
        """Posterior mean error probability ``E_q[sigmoid(eta)]`` of one image, (H, W).

        Uses the probit approximation of the logistic-normal mean.
        """
        m, g_raw = self.params[index]
        g = F.softplus(g_raw)
        return torch.sigmoid(m / torch.sqrt(1.0 + math.pi * g * g / 8.0))

    @torch.enable_grad()
    def e_step(self, indices: Tensor, ops: Sequence[int], log_probs: Tensor, labels: Tensor,
               valid: Tensor | None, *, steps: int, lr: float, mu: float, sigma: float,
               rho_prior: float, rho_post: float, generator: torch.Generator | None = None,
               betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> Tensor:
        """``steps`` Adam steps on these images' (m, g_raw) with the network output fixed.

        Noise draws are made in each image's stored frame and transformed with it, so the
        update is exactly equivariant under the augmentation.

        Args:
            indices: (B,) image indices.
            ops: Dihedral op of each sample.
            log_probs: (B, K, H', W') network log-probabilities in the augmented frame (detached).
            labels: (B, H', W') observed labels (augmented frame).
            valid: (B, H', W') labelled pixels.
            steps: Adam steps.
            lr: Adam learning rate (published: 0.1).
            mu: Prior mean.
            sigma: Prior standard deviation.
            rho_prior: Prior correlation.
            rho_post: Posterior correlation.
            generator: Generator for the noise draws.
            betas: Adam betas.
            eps: Adam epsilon.

        Returns:
            (B,) ELBO per pixel after the last step (detached).
        """
        idx = indices.tolist()
        log_probs = log_probs.detach()
        b1, b2 = betas
        elbo = torch.zeros(len(idx))
        for _ in range(steps):
            raw = torch.stack([apply_op(self.params[i], op)
                               for i, op in zip(idx, ops, strict=True)]).requires_grad_(True)
            draws = sample_kms((len(idx), *self.shape), rho_post, generator=generator)
            z = torch.stack([apply_op(d, op) for d, op in zip(draws, ops, strict=True)])
            elbo = noisy_label_elbo(log_probs, labels, raw[:, 0], F.softplus(raw[:, 1]), z,
                                    mu=mu, sigma=sigma, rho_prior=rho_prior, rho_post=rho_post,
                                    valid=valid)
            (grad,) = torch.autograd.grad(-elbo.sum(), raw)
            with torch.no_grad():
                for row, (i, op) in enumerate(zip(idx, ops, strict=True)):
                    g_i = invert_op(grad[row], op)
                    self.steps[i] += 1
                    t = int(self.steps[i])
                    self.exp_avg[i].mul_(b1).add_(g_i, alpha=1 - b1)
                    self.exp_avg_sq[i].mul_(b2).addcmul_(g_i, g_i, value=1 - b2)
                    denom = (self.exp_avg_sq[i] / (1 - b2**t)).sqrt_().add_(eps)
                    self.params[i].addcdiv_(self.exp_avg[i], denom, value=-lr / (1 - b1**t))
        return elbo.detach()

    def state_of(self, indices: Tensor) -> dict[str, Tensor]:
        """Parameters and optimiser state of ``indices`` (for syncing ranks)."""
        return {"params": self.params[indices], "exp_avg": self.exp_avg[indices],
                "exp_avg_sq": self.exp_avg_sq[indices], "steps": self.steps[indices]}

    def write_state(self, indices: Tensor, state: dict[str, Tensor]) -> None:
        """Overwrite the state of ``indices`` (from another rank's E-step)."""
        for name, value in state.items():
            getattr(self, name)[indices] = value.to(getattr(self, name).dtype)


def _encode(text: str, length: int = 32) -> Tensor:
    data = text.encode("ascii")[:length].ljust(length, b"\0")
    return torch.tensor(list(data), dtype=torch.uint8)
