"""Training: Lightning task for the physics-informed and MLP retrievals, and a one-call trainer."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from eokit.core.train import BaseTask, SimpleDataModule, fit, save_weights
from eokit.lst.data import FEATURES, SampleDataset, SampleSet, collate_chunks
from eokit.lst.model import (
    DOWN_SCALE,
    TAU_SCALE,
    UP_SCALE,
    PhysicsInformedLST,
    build_network,
    default_model_path,
    load_network,
    predict,
)

__all__ = [
    "LSTTask",
    "build_network",
    "default_model_path",
    "load_network",
    "predict",
    "train_retrieval",
]

logger = logging.getLogger(__name__)


class LSTTask(BaseTask):
    """Lightning task: Ts loss (+ RTE residual + atmospheric-function supervision for PIML).

    Loss = Huber(Ts − Ts*) + ``rte_weight``·mean(((L̂ − L)/B'(BT))²) + ``atm_weight``·
    mean(((τ − τ*)/0.05)² + ((L↑ − L↑*)/0.5)² + ((L↓ − L↓*)/0.8)²), where L̂ is the forward RTE
    with the predicted atmosphere and the true Ts (zero terms for the MLP).

    Args:
        network: :class:`PhysicsInformedLST` or :class:`MLPLST`.
        rte_weight, atm_weight: Loss weights of the physics terms.
        lr, weight_decay, scheduler: Optimiser settings (see BaseTask).
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        rte_weight: float = 0.5,
        atm_weight: float = 0.1,
        lr: float = 3e-3,
        weight_decay: float = 1e-5,
        scheduler: str | None = "cosine",
    ) -> None:
        super().__init__(lr=lr, weight_decay=weight_decay, scheduler=scheduler)
        self.network = network
        self.rte_weight = rte_weight
        self.atm_weight = atm_weight

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the network."""
        out: dict[str, torch.Tensor] = self.network(x)
        return out

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Loss terms of one batch."""
        out = self(batch["x"])
        target = batch["surface_temperature"]
        terms = {"ts": nn.functional.huber_loss(out["ts"], target, delta=1.0)}
        if isinstance(self.network, PhysicsInformedLST):
            band = self.network.band
            eps = batch["emissivity"]
            predicted = (
                out["tau"] * (eps * band.radiance(target) + (1 - eps) * out["down"]) + out["up"]
            )
            slope = band.radiance_derivative(batch["bt"])
            terms["rte"] = (((predicted - batch["radiance"]) / slope) ** 2).mean()
            terms["atm"] = (
                ((out["tau"] - batch["tau"]) / TAU_SCALE) ** 2
                + ((out["up"] - batch["up"]) / UP_SCALE) ** 2
                + ((out["down"] - batch["down"]) / DOWN_SCALE) ** 2
            ).mean()
        return terms

    def shared_step(self, batch: Any, stage: str) -> torch.Tensor:
        """Weighted sum of the loss terms; logs each term and the Ts RMSE."""
        terms = self.losses(batch)
        loss = terms["ts"]
        if "rte" in terms:
            loss = loss + self.rte_weight * terms["rte"] + self.atm_weight * terms["atm"]
        size = int(batch["x"].shape[0])
        for name, value in terms.items():
            self.log(f"{stage}/{name}", value, on_step=False, on_epoch=True, batch_size=size)
        return loss


def train_retrieval(
    train: SampleSet,
    val: SampleSet | None,
    out_dir: str | Path,
    *,
    kind: str = "piml",
    epochs: int = 30,
    batch_size: int = 512,
    seed: int = 0,
    hidden: int = 64,
    layers: int = 3,
    prior: np.ndarray | None = None,
    rte_weight: float = 0.5,
    atm_weight: float = 0.1,
    lr: float = 3e-3,
    progress: bool = True,
    resume: bool = False,
    trainer_overrides: dict[str, Any] | None = None,
) -> nn.Module:
    """Train a retrieval network on simulated samples and save ``<out_dir>/<kind>.safetensors``.

    Returns:
        The trained network (eval mode).
    """
    from eokit.core.train import seed_everything

    seed_everything(seed)
    network = build_network(kind, hidden=hidden, layers=layers, prior=prior)
    network.set_normalisation(train.features())  # type: ignore[operator]
    task = LSTTask(network, rte_weight=rte_weight, atm_weight=atm_weight, lr=lr)
    chunk = 128
    data = SimpleDataModule(
        SampleDataset(train, chunk=chunk, seed=seed),
        SampleDataset(val, chunk=chunk) if val is not None else None,
        batch_size=max(1, batch_size // chunk),
        seed=seed,
        collate_fn=collate_chunks,
    )
    out_dir = Path(out_dir)
    fit(
        task,
        data,
        out_dir,
        resume=resume,
        seed=seed,
        trainer_overrides=trainer_overrides,
        max_epochs=epochs,
        progress=progress,
        log_every_n_steps=50,
    )
    network.eval()
    meta = {
        "kind": kind,
        "hidden": str(hidden),
        "layers": str(layers),
        "features": ",".join(FEATURES),
        "band": network.band.name if isinstance(network, PhysicsInformedLST) else "L8_B10",
    }
    save_weights(network, out_dir / f"{kind}.safetensors", metadata=meta)
    return network
