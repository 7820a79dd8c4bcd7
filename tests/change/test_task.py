import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from eokit.change.data import ChangeDataset, collate_pairs, simulated_pairs
from eokit.change.model import build_canet
from eokit.change.task import (
    change_loss,
    change_metrics,
    choose_threshold,
    evaluate,
    load_domain_adapter,
    load_model,
    prepare_adapt,
    save_domain_adapter,
    save_model,
    train_steps,
)
from eokit.core.errors import InputError
from eokit.core.metrics import ConfusionMatrix

DOMAINS = ["sim_buildings", "sim_landcover"]


def _loader(domain_index, name, count=3, size=32):
    data = ChangeDataset(simulated_pairs(name, count=count, size=size, seed=0),
                         domain=domain_index, augment=True)
    return DataLoader(data, batch_size=3, collate_fn=collate_pairs)


def test_change_loss_ignores_255():
    logits = torch.zeros(1, 1, 2, 2)
    mask = torch.tensor([[[1, 0], [255, 255]]])
    flipped = torch.tensor([[[1, 0], [0, 1]]])
    a = change_loss(logits, mask, dice_weight=0)
    logits_changed = logits.clone()
    logits_changed[0, 0, 1] = 50.0  # only on ignored pixels
    assert torch.isclose(change_loss(logits_changed, mask, dice_weight=0), a)
    assert not torch.isclose(change_loss(logits_changed, flipped, dice_weight=0), a)
    assert change_loss(logits, torch.full((1, 2, 2), 255)).item() == 0.0


def test_change_metrics_from_confusion_matrix():
    matrix = ConfusionMatrix(2)
    truth = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    pred = np.array([1, 1, 0, 1, 0, 0, 0, 0])
    matrix.update(pred, truth)
    tp, fp, fn = 2, 1, 2
    metrics = change_metrics(matrix)
    assert metrics["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert metrics["iou"] == pytest.approx(tp / (tp + fp + fn))
    assert metrics["precision"] == pytest.approx(2 / 3)
    assert metrics["oa"] == pytest.approx(5 / 8)


@pytest.mark.parametrize(("lora_rank", "encoder_lora_rank"), [(0, 0), (4, 0), (4, 2)])
def test_adapt_trains_only_the_new_domain_and_round_trips(tmp_path, lora_rank,
                                                          encoder_lora_rank):
    model = build_canet(DOMAINS, in_channels=6, lora_rank=lora_rank,
                        encoder_lora_rank=encoder_lora_rank)
    train_steps(model, _loader(0, DOMAINS[0]), steps=2)
    shared_path = save_model(model, tmp_path / "model.safetensors")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = prepare_adapt(model, "sim_new")
    assert 0 < report["percent"] < 8.0
    assert report["groups"]["adapters"]["trainable"] > 0
    loras = [n for n, p in model.named_parameters() if ".loras." in n and p.requires_grad]
    assert bool(loras) == bool(lora_rank)
    assert all(".loras.2." in n for n in loras)  # only the new dataset's low-rank updates
    assert any(n.startswith("base.encoder.") for n in loras) == bool(encoder_lora_rank)
    train_steps(model, _loader(2, "sim_new"), steps=2, lr=1e-2)
    after = model.state_dict()
    for key, value in before.items():
        assert torch.equal(value, after[key]), f"{key} changed during adapt"
    adapter_path = save_domain_adapter(model, "sim_new", tmp_path / "new.safetensors")
    assert adapter_path.stat().st_size < 0.15 * shared_path.stat().st_size

    restored = load_model(shared_path)
    assert restored.domains == DOMAINS
    assert load_domain_adapter(restored, adapter_path) == "sim_new"
    model.eval()
    x = torch.rand(2, 6, 32, 32)
    y = torch.rand(2, 6, 32, 32)
    assert torch.allclose(restored(x, y, domain="sim_new"), model(x, y, domain="sim_new"))
    assert torch.allclose(restored(x, y, domain=0), model(x, y, domain=0))


def test_adapter_for_another_base_is_input_error(tmp_path):
    model = build_canet(DOMAINS, in_channels=6)
    prepare_adapt(model, "sim_new")
    path = save_domain_adapter(model, "sim_new", tmp_path / "new.safetensors")
    other_weights = build_canet(DOMAINS, in_channels=6)  # same architecture, other weights
    with pytest.raises(InputError, match="another base model"):
        load_domain_adapter(other_weights, path)
    other_arch = build_canet(DOMAINS, in_channels=6, architecture="siamese_unet")
    with pytest.raises(InputError):
        load_domain_adapter(other_arch, path)
    with pytest.raises(InputError, match="adapter-only"):
        load_model(path)
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "none.safetensors")


def test_evaluate_matches_manual_confusion():
    model = build_canet(DOMAINS, in_channels=6).eval()
    data = ChangeDataset(simulated_pairs("sim_buildings", count=2, size=32, seed=3))
    metrics = evaluate(model, data, domain="sim_buildings", batch_size=2)
    matrix = ConfusionMatrix(2)
    with torch.no_grad():
        for index in range(len(data)):
            sample = data[index]
            logits = model(sample["image_a"][None], sample["image_b"][None], domain=0)
            matrix.update((torch.sigmoid(logits)[0, 0] > 0.5).long(), sample["mask"])
    assert metrics["kappa"] == pytest.approx(change_metrics(matrix)["kappa"], nan_ok=True)
    assert metrics["pixels"] == 2 * 32 * 32


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_separately_adapted_datasets_stack_on_one_base(tmp_path, lora_rank):
    model = build_canet(DOMAINS, in_channels=6, lora_rank=lora_rank)
    train_steps(model, _loader(0, DOMAINS[0]), steps=1)
    shared_path = save_model(model, tmp_path / "model.safetensors")
    outputs, paths = {}, {}
    x, y = torch.rand(2, 6, 32, 32), torch.rand(2, 6, 32, 32)
    for name, seed in (("new_a", 1), ("new_b", 2)):  # two independent adapt runs
        run = load_model(shared_path)
        prepare_adapt(run, name, init_from=seed % 2)
        torch.manual_seed(seed)
        train_steps(run, _loader(2, "sim_new"), steps=2, lr=1e-2)
        run.thresholds[name] = 0.3 + 0.1 * seed
        paths[name] = save_domain_adapter(run, name, tmp_path / f"{name}.safetensors")
        run.eval()
        outputs[name] = run(x, y, domain=name).detach()
    assert not torch.allclose(outputs["new_a"], outputs["new_b"])

    stacked = load_model(shared_path)
    for name in ("new_b", "new_a"):  # any order
        assert load_domain_adapter(stacked, paths[name]) == name
    assert stacked.domains == [*DOMAINS, "new_b", "new_a"]
    for name in ("new_a", "new_b"):
        assert torch.allclose(stacked(x, y, domain=name), outputs[name], atol=1e-6)
        assert stacked.threshold_of(name) == pytest.approx(0.3 + 0.1 * (name == "new_b") + 0.1)
    # a name clash is refused and leaves the model untouched; another name works
    before = len(stacked.state_dict())
    with pytest.raises(InputError, match="already in this model"):
        load_domain_adapter(stacked, paths["new_a"])
    assert len(stacked.state_dict()) == before and stacked.num_domains == 4
    assert load_domain_adapter(stacked, paths["new_a"], name="new_a2") == "new_a2"
    assert torch.allclose(stacked(x, y, domain="new_a2"), outputs["new_a"], atol=1e-6)
    load_domain_adapter(stacked, paths["new_b"], name="new_a2", replace=True)  # overwrite
    assert stacked.num_domains == 5
    assert torch.allclose(stacked(x, y, domain="new_a2"), outputs["new_b"], atol=1e-6)
    # an adapter of another base is refused before anything is added
    other = build_canet(DOMAINS, in_channels=6, lora_rank=lora_rank)
    with pytest.raises(InputError, match="another base model") as error:
        load_domain_adapter(other, paths["new_a"])
    assert "\n" not in str(error.value) and other.num_domains == 2


def test_choose_threshold_maximises_training_f1():
    model = build_canet(DOMAINS, in_channels=6)
    data = ChangeDataset(simulated_pairs("sim_buildings", count=2, size=32, seed=3))
    threshold = choose_threshold(model, data, domain=0)
    assert 0.0 < threshold < 1.0
    metrics = {t: evaluate(model, data, domain=0, threshold=t)["f1"] for t in (0.25, 0.5, 0.75)}
    best = evaluate(model, data, domain=0, threshold=threshold)["f1"]
    assert best >= max(np.nan_to_num(list(metrics.values()))) - 1e-9
    model.thresholds["sim_buildings"] = threshold
    assert evaluate(model, data, domain=0, threshold=None)["f1"] == pytest.approx(best)


def test_positive_weight_grows_with_imbalance():
    from eokit.change.task import positive_weight

    sparse = [{"image_a": np.zeros((1, 4, 4)), "image_b": np.zeros((1, 4, 4)),
               "mask": np.eye(4, dtype=np.int64) * 0}]
    sparse[0]["mask"][0, 0] = 1
    dense = [{**sparse[0], "mask": np.eye(4, dtype=np.int64)}]
    weight_sparse = positive_weight(ChangeDataset(sparse))
    weight_dense = positive_weight(ChangeDataset(dense))
    assert weight_sparse == pytest.approx(np.sqrt(15))
    assert weight_dense == pytest.approx(np.sqrt(3)) and weight_dense < weight_sparse
    logits = torch.zeros(1, 1, 4, 4)
    mask = torch.from_numpy(sparse[0]["mask"])[None]
    assert change_loss(logits, mask, dice_weight=0, pos_weight=4.0) > change_loss(
        logits, mask, dice_weight=0)


@pytest.mark.parametrize("placement", ["decoder", "finest"])
def test_cheap_placements_adapt_bn_statistics_without_encoder_gradients(placement):
    model = build_canet(DOMAINS, in_channels=6, encoder_lora_rank=2)
    report = prepare_adapt(model, "sim_new", placement=placement)
    full = prepare_adapt(build_canet(DOMAINS, in_channels=6, encoder_lora_rank=2), "sim_new")
    assert 0 < report["trainable"] < full["trainable"]
    # the encoder's low-rank updates train with placement "all" only
    assert not any(p.requires_grad for n, p in model.named_parameters()
                   if n.startswith("base.encoder.") and ".loras." in n)
    index = model.domain_index("sim_new")
    encoder_bn = next(m for n, m in model.base.encoder.named_modules()
                      if n.endswith(f"bns.{index}"))
    assert not encoder_bn.weight.requires_grad
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_steps(model, _loader(index, "sim_new"), steps=2, lr=1e-2)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    # the new dataset's encoder BN statistics adapted (AdaBN), its affine did not
    assert any(k.startswith("base.encoder") and f"bns.{index}.running_mean" in k for k in changed)
    assert not any(k.startswith("base.encoder") and k.endswith((".weight", ".bias"))
                   for k in changed)
    # nothing outside the new dataset moved
    assert all(f".{index}." in k for k in changed), sorted(changed)[:3]
    if placement == "finest":
        assert not any(k.startswith("base.decoder.0.adapters") for k in changed)
        assert any(k.startswith("base.decoder.4.adapters") for k in changed)
    # where the gradient has to go: the second-finest decoder block is on the backward path of
    # the decoder placement, but not of finest (no shared layer is back-propagated)
    seen = []
    hook = model.base.decoder[3].inner.register_forward_hook(
        lambda _m, _i, out: seen.append(out.requires_grad))
    model.train()
    batch = next(iter(_loader(index, "sim_new")))
    model(batch["image_a"], batch["image_b"], domain=index)
    hook.remove()
    assert seen == [placement == "decoder"]


def test_evaluate_refuses_a_threshold_outside_0_1():
    model = build_canet(DOMAINS, in_channels=6)
    data = ChangeDataset(simulated_pairs(DOMAINS[0], count=1, size=32, seed=0))
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(InputError, match="threshold: must be between 0 and 1"):
            evaluate(model, data, domain=0, threshold=bad)


def test_unknown_placement_is_input_error():
    with pytest.raises(InputError, match="unknown placement"):
        prepare_adapt(build_canet(DOMAINS, in_channels=6), "sim_new", placement="middle")



def test_train_steps_logs_progress(caplog):
    model = build_canet(list(DOMAINS), in_channels=6)
    with caplog.at_level("INFO", logger="eokit.change.task"):
        train_steps(model, _loader(0, DOMAINS[0]), steps=4, log_every=2)
    lines = [r.getMessage() for r in caplog.records if "train step" in r.getMessage()]
    assert [line.split(":")[0] for line in lines] == ["train step 2/4", "train step 4/4"]
    assert "left" in lines[0]
