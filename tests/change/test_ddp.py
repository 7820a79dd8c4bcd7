"""Joint multi-dataset training under DDP: two CPU processes (gloo), dataset-grouped batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Uses the same helpers as ``eokit change fit`` (datasets, grouped sampler, trainer settings).
SCRIPT = textwrap.dedent(
    '''
    import json
    import sys
    from pathlib import Path

    import torch
    from lightning.pytorch.callbacks import Callback

    from eokit.change.cli import _loaders, _trainer, build_datasets
    from eokit.change.lit import ChangeTask
    from eokit.change.model import build_canet

    DOMAINS = ["sim_buildings", "sim_landcover", "sim_sensor"]


    class Recorder(Callback):
        def __init__(self):
            self.batches = []
            self.start = None

        def on_train_start(self, trainer, pl_module):
            self.start = {k: v.clone() for k, v in pl_module.state_dict().items()}

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            # a pair is recognised by the sum of its date-A image (flip/rotation invariant)
            sums = [round(float(x.double().sum()), 3) for x in batch["image_a"]]
            self.batches.append({"domain": int(batch["domain"]), "sums": sums})


    def main(out):
        torch.manual_seed(0)
        entries = [{"name": d, "source": "sim", "count": c, "size": 32}
                   for d, c in zip(DOMAINS, (4, 4, 2))]
        model = build_canet(DOMAINS, in_channels=6)
        train = build_datasets(entries, domains=DOMAINS, stage="train", crop=None,
                               in_channels=6, seed=0)
        loader, _ = _loaders(train, [], batch_size=2, seed=0)
        recorder = Recorder()
        trainer = _trainer(Path(out), {"trainer": {"max_epochs": 1}},
                           {"strategy": "ddp", "devices": 2, "enable_progress_bar": False,
                            "logger": False, "enable_model_summary": False})
        trainer.callbacks.append(recorder)
        trainer.fit(ChangeTask(model), loader)
        all_sums = {
            d.domain: [round(float(torch.from_numpy(d.load(i)["image_a"]).double().sum()), 3)
                       for i in range(len(d))]
            for d in train
        }
        Path(out, f"rank{trainer.global_rank}.json").write_text(json.dumps({
            "world": trainer.world_size, "batches": recorder.batches, "all": all_sums,
            "start": {k: v.float().sum().item() for k, v in recorder.start.items()},
            "end": {k: v.float().sum().item() for k, v in model.state_dict().items()},
        }))


    if __name__ == "__main__":
        main(sys.argv[1])
    '''
)


@pytest.mark.slow
def test_joint_training_on_two_ddp_processes_keeps_batches_dataset_grouped(tmp_path: Path) -> None:
    script = tmp_path / "ddp_change.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    proc = subprocess.run([sys.executable, str(script), str(out)], capture_output=True,
                          text=True, timeout=400, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    owner = {s: int(d) for d, sums in ranks[0]["all"].items() for s in sums}
    assert len(owner) == 10  # 4 + 4 + 2 distinct pairs
    seen: list[set[float]] = []
    for rank in ranks:
        for batch in rank["batches"]:
            # every batch holds pairs of one dataset, and it is the dataset the batch claims
            assert {owner[s] for s in batch["sums"]} == {batch["domain"]}
        seen.append({s for b in rank["batches"] for s in b["sums"]})
    # same number of steps on both ranks (no DDP hang); together they cover every pair
    assert len(ranks[0]["batches"]) == len(ranks[1]["batches"]) >= 2
    assert seen[0] | seen[1] == set(owner)
    domains_per_rank = [{b["domain"] for b in r["batches"]} for r in ranks]
    assert domains_per_rank[0] | domains_per_rank[1] == {0, 1, 2}
    # gradients are all-reduced: both replicas end with identical weights, which moved
    assert ranks[0]["start"] == ranks[1]["start"]
    assert ranks[0]["end"] == ranks[1]["end"]
    assert ranks[0]["end"] != ranks[0]["start"]
