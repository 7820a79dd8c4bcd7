"""CANet ablations on the change simulator: three datasets with different label policies/sensors.

Compares, per simulated dataset (F1 / IoU / kappa of the change class on held-out pairs):
shared model with one head; per-dataset full fine-tuning of it; CANet (joint, then per-dataset
adapters); CANet without ICM; CANet without per-dataset BN; and a fourth dataset added by
``adapt`` at 5/10/25/100 % of its training labels vs full fine-tuning from the same model.
Plain training loops (``eokit.change.task.train_steps``), CPU, one thread, small scenes.

    python benchmarks/change_domains.py [--quick]
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, seed_all, write_results  # noqa: E402

JOINT = ["sim_buildings", "sim_landcover", "sim_sensor"]
NEW = "sim_new"
FRACTIONS = (0.05, 0.10, 0.25, 1.0)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = add_common_args(argparse.ArgumentParser(description=__doc__))
    args = parser.parse_args(argv)
    seed_all(args.seed)

    import torch
    from torch.utils.data import ConcatDataset, DataLoader

    from eokit.change.data import (
        ChangeDataset,
        DomainGroupedBatchSampler,
        collate_pairs,
        simulated_pairs,
    )
    from eokit.change.model import CANet, SiameseTimmUNet, build_canet
    from eokit.change.task import evaluate, prepare_adapt, train_steps
    from eokit.core.adapters import trainable_parameter_report

    torch.set_num_threads(1)  # the machine is shared; one thread is the fastest per step here
    quick = args.quick
    size = 32 if quick else 48
    n_train, n_test = (8, 4) if quick else (48, 12)
    joint_steps, domain_steps, adapt_steps = (6, 3, 3) if quick else (240, 40, 60)
    batch = 8
    lr = 4e-3
    t0 = time.perf_counter()
    train_pairs = {d: simulated_pairs(d, count=n_train, size=size, seed=args.seed)
                   for d in [*JOINT, NEW]}
    test_pairs = {d: simulated_pairs(d, count=n_test, size=size, seed=args.seed + 1)
                  for d in [*JOINT, NEW]}
    all_domains = [*JOINT, NEW]
    index = {d: i for i, d in enumerate(all_domains)}
    data_seconds = time.perf_counter() - t0

    def train_set(domain: str, fraction: float = 1.0, domain_index: int | None = None):
        pairs = train_pairs[domain]
        keep = max(2, int(round(len(pairs) * fraction)))
        return ChangeDataset(pairs[:keep], domain=index[domain] if domain_index is None
                             else domain_index, augment=True, seed=args.seed)

    def test_set(domain: str, domain_index: int):
        return ChangeDataset(test_pairs[domain], domain=domain_index)

    def joint_loader(domain_ids: dict[str, int] | None = None):
        sets = [train_set(d, domain_index=(domain_ids or index)[d]) for d in JOINT]
        sampler = DomainGroupedBatchSampler([len(s) for s in sets], batch, seed=args.seed,
                                            balance=True)
        return DataLoader(ConcatDataset(sets), batch_sampler=sampler, collate_fn=collate_pairs)

    def single_loader(domain: str, domain_index: int, fraction: float = 1.0):
        data = train_set(domain, fraction, domain_index)
        return DataLoader(data, batch_size=min(batch, len(data)), shuffle=True,
                          collate_fn=collate_pairs,
                          generator=torch.Generator().manual_seed(args.seed))

    def scores(model, domains: dict[str, int]) -> dict[str, dict[str, float]]:
        return {d: evaluate(model, test_set(d, i), domain=i, batch_size=16)
                for d, i in domains.items()}

    results: dict[str, dict] = {}
    total_params: dict[str, int] = {}

    # 1. One shared model, one head, every dataset (a plain siamese U-Net, no dataset parts).
    class Shared(torch.nn.Module):
        """The plain base network behind the CANet interface (one 'domain' for everything)."""

        def __init__(self) -> None:
            super().__init__()
            self.net = SiameseTimmUNet(6)
            self.domains = list(all_domains)
            self.in_channels = 6

        def set_domain(self, domain) -> None:  # noqa: ANN001
            pass

        def forward(self, a, b, domain=None):  # noqa: ANN001
            return self.net(a, b)

    seed_all(args.seed)
    shared = Shared()
    shared_time = train_steps(shared, joint_loader(), steps=joint_steps, lr=lr, progress=True)
    results["shared_single_head"] = {
        "per_domain": scores(shared, {d: 0 for d in JOINT}),
        "trainable_params_per_domain": sum(p.numel() for p in shared.parameters()),
        "seconds_per_step": shared_time["median_step_seconds"],
        "steps": joint_steps,
    }
    total_params["shared_single_head"] = sum(p.numel() for p in shared.parameters())

    # 2. Per-dataset full fine-tuning of the shared model (one full copy per dataset).
    per_domain, ft_times = {}, []
    for domain in JOINT:
        model = copy.deepcopy(shared)
        timing = train_steps(model, single_loader(domain, 0), steps=domain_steps, lr=lr / 2)
        ft_times.append(timing["median_step_seconds"])
        per_domain[domain] = scores(model, {domain: 0})[domain]
    results["per_domain_full_finetune"] = {
        "per_domain": per_domain,
        "trainable_params_per_domain": total_params["shared_single_head"],
        "seconds_per_step": float(np.mean(ft_times)),
        "steps": joint_steps + domain_steps,
    }

    # 3. CANet joint, then per-dataset adapter training; 4./5. ablations (joint only).
    def canet_run(name: str, **kwargs) -> CANet:
        seed_all(args.seed)
        model = build_canet(JOINT, in_channels=6, **kwargs)
        timing = train_steps(model, joint_loader(), steps=joint_steps, lr=lr, progress=True)
        results[name] = {
            "per_domain": scores(model, {d: i for i, d in enumerate(JOINT)}),
            "seconds_per_step": timing["median_step_seconds"],
            "steps": joint_steps,
            "dataset_specific_params_per_domain": sum(
                p.numel() for n, p in model.named_parameters()
                if n in set(model.domain_parameter_names(0))
            ),
        }
        total_params[name] = sum(p.numel() for p in model.parameters())
        return model

    canet = canet_run("canet_joint")
    canet_joint_state = copy.deepcopy(canet.state_dict())
    refined, adapter_times, shares = {}, [], {}
    for i, domain in enumerate(JOINT):
        report = prepare_adapt(canet, domain, icm_output=False)
        shares[domain] = report["trainable"] / report["total"] * 100
        timing = train_steps(canet, single_loader(domain, i), steps=domain_steps, lr=lr / 2)
        adapter_times.append(timing["median_step_seconds"])
        refined[domain] = scores(canet, {domain: i})[domain]
    for p in canet.parameters():
        p.requires_grad_(True)
    results["canet_joint_then_adapters"] = {
        "per_domain": refined,
        "trainable_params_per_domain": report["trainable"],
        "trainable_percent_per_domain": shares,
        "seconds_per_step": float(np.mean(adapter_times)),
        "steps": joint_steps + domain_steps,
    }
    canet_run("canet_icm_also_gates_output", icm_output=True)
    canet_run("canet_without_icm", use_icm=False)
    canet_run("canet_without_domain_bn", domain_bn=False)

    # 6. A fourth dataset: adapt (frozen shared weights) vs full fine-tuning, at label fractions.
    base = build_canet(JOINT, in_channels=6)
    base.load_state_dict(canet_joint_state)
    adapt_rows = []
    for fraction in FRACTIONS:
        row: dict[str, float | int] = {"fraction": fraction,
                                       "pairs": max(2, int(round(n_train * fraction)))}
        for mode in ("adapt", "adapt_fast", "full_finetune"):
            seed_all(args.seed)
            model = copy.deepcopy(base)
            # adapt: all the dataset's parts incl. encoder BN affine (the default);
            # adapt_fast: encoder/fusion BN only re-estimate statistics (no encoder backward).
            report = prepare_adapt(model, NEW, init_from=0,
                                   encoder_bn_affine=mode != "adapt_fast")
            if mode == "full_finetune":
                for p in model.parameters():
                    p.requires_grad_(True)
                report = trainable_parameter_report(model)
            timing = train_steps(model, single_loader(NEW, 3, fraction), steps=adapt_steps,
                                 lr=lr / 2 if mode == "full_finetune" else lr)
            metrics = evaluate(model, test_set(NEW, 3), domain=3, batch_size=16)
            row[f"{mode}_f1"] = metrics["f1"]
            row[f"{mode}_iou"] = metrics["iou"]
            row[f"{mode}_kappa"] = metrics["kappa"]
            row[f"{mode}_seconds_per_step"] = timing["median_step_seconds"]
            row[f"{mode}_trainable"] = report["trainable"]
            row[f"{mode}_trainable_percent"] = report["percent"]
        adapt_rows.append(row)
    results["new_domain_adapt_vs_finetune"] = {"rows": adapt_rows, "steps": adapt_steps}

    # Targets.
    def f1(name: str, domain: str) -> float:
        return float(results[name]["per_domain"][domain]["f1"])

    canet_best = {d: max(f1("canet_joint", d), f1("canet_joint_then_adapters", d))
                  for d in JOINT}
    adapt_step = float(np.mean([r["adapt_seconds_per_step"] for r in adapt_rows]))
    ft_step = float(np.mean([r["full_finetune_seconds_per_step"] for r in adapt_rows]))
    fast_step = float(np.mean([r["adapt_fast_seconds_per_step"] for r in adapt_rows]))
    targets = {
        "adapter_share_percent_max": max(shares.values()),
        "adapter_share_le_8pct": max(shares.values()) <= 8.0,
        "f1_ratio_canet_vs_per_domain_finetune": {
            d: canet_best[d] / max(f1("per_domain_full_finetune", d), 1e-9) for d in JOINT},
        "f1_ratio_ge_0.98": all(
            canet_best[d] >= 0.98 * f1("per_domain_full_finetune", d) for d in JOINT),
        "f1_gain_over_shared_points": {
            d: 100 * (canet_best[d] - f1("shared_single_head", d)) for d in JOINT},
        "f1_gain_ge_5_on_differing_policies": all(
            100 * (canet_best[d] - f1("shared_single_head", d)) >= 5 for d in JOINT),
        "adapt_beats_finetune_at_le_10pct": all(
            r["adapt_f1"] > r["full_finetune_f1"] for r in adapt_rows if r["fraction"] <= 0.10),
        "adapter_step_over_finetune_step": adapt_step / ft_step,
        "adapter_step_le_0.6x": adapt_step / ft_step <= 0.6,
        "adapt_fast_step_over_finetune_step": fast_step / ft_step,
        "adapt_fast_step_le_0.6x": fast_step / ft_step <= 0.6,
        "adapt_fast_beats_finetune_at_le_10pct": all(
            r["adapt_fast_f1"] > r["full_finetune_f1"] for r in adapt_rows
            if r["fraction"] <= 0.10),
    }
    payload = {
        "scale": {
            "image_px": size, "train_pairs_per_dataset": n_train,
            "test_pairs_per_dataset": n_test, "batch_size": batch, "joint_steps": joint_steps,
            "per_dataset_steps": domain_steps, "adapt_steps": adapt_steps,
            "backbone": "resnet18-tiny (timm resnet18, channels 16-128, deep stem 8)",
            "threads": 1, "quick": quick, "data_seconds": data_seconds,
        },
        "label_policies": {
            "sim_buildings": "new + demolished buildings",
            "sim_landcover": "every change type",
            "sim_sensor": "new buildings + vegetation loss; other sensor (gain 1.35, gamma 0.8, "
                          "blur)",
            "sim_new": "vegetation loss + water change; other sensor (gain 0.75, gamma 1.2)",
        },
        "results": results,
        "total_params": total_params,
        "targets": targets,
        "seconds": time.perf_counter() - t0,
        "notes": [],
    }
    notes = payload["notes"]
    for key, ok in targets.items():
        if isinstance(ok, bool) and not ok:
            notes.append(f"target not met: {key}")
    write_results("change_domains", payload, _figure(results, adapt_rows), out_dir=args.out)
    print(f"done in {payload['seconds']:.0f} s; targets: {targets}")


def _figure(results: dict, adapt_rows: list[dict]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = ["shared_single_head", "per_domain_full_finetune", "canet_joint",
               "canet_joint_then_adapters", "canet_icm_also_gates_output",
               "canet_without_icm", "canet_without_domain_bn"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, 4.8))
    width = 0.12
    for k, method in enumerate(methods):
        values = [np.nan_to_num(results[method]["per_domain"][d]["f1"]) for d in JOINT]
        ax.bar(np.arange(len(JOINT)) + (k - 3) * width, values, width, label=method)
    ax.set_xticks(range(len(JOINT)), JOINT)
    ax.set_ylabel("change F1 (held-out pairs)")
    ax.set_title("Three simulated datasets, different label policies")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fractions = [100 * r["fraction"] for r in adapt_rows]
    bx.plot(fractions, [r["adapt_f1"] for r in adapt_rows], "o-", label="adapt (CANet)")
    bx.plot(fractions, [r["adapt_fast_f1"] for r in adapt_rows], "^:",
            label="adapt, decoder BN only (fast)")
    bx.plot(fractions, [r["full_finetune_f1"] for r in adapt_rows], "s--", label="full fine-tune")
    bx.set_xscale("log")
    bx.set_xticks(fractions, [f"{f:g}" for f in fractions])
    bx.set_xlabel("% of the new dataset's training labels")
    bx.set_ylabel("change F1 (sim_new)")
    bx.set_title("Fourth dataset added to the trained model")
    bx.set_ylim(0, 1)
    bx.legend()
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
