"""Curation tools: schemas derive from the signatures, and a call returns a JSON-able summary."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eokit.agent.schema import tool_schema
from eokit.curation.tools import TOOLS


def test_every_tool_has_a_schema():
    names = {tool.name for tool in TOOLS}
    assert names == {"curation_cluster", "curation_sample", "curation_simulate",
                     "curation_embed", "curation_probe"}
    sample = tool_schema(next(t for t in TOOLS if t.name == "curation_sample"))
    assert sample["properties"]["strategy"]["enum"] == ["balanced", "closest", "random"]


def test_cluster_and_sample_tools_return_json(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "e.npy", rng.normal(size=(300, 4)).astype(np.float32))
    tools = {tool.name: tool.function for tool in TOOLS}
    clustered = tools["curation_cluster"](str(tmp_path / "e.npy"), str(tmp_path / "c"),
                                          levels="12,3", resample_steps=1)
    sampled = tools["curation_sample"](str(tmp_path / "c"), 0.25, str(tmp_path / "s"))
    json.dumps(clustered)
    json.dumps(sampled)
    assert sampled["kept"] == 75 and np.load(sampled["kept_indices"]).shape == (75,)


@pytest.mark.slow
def test_demo_section_writes_outputs(tmp_path):

    from eokit.core.report import Report
    from eokit.curation.demo import add_demo_section

    report = Report("demo")
    add_demo_section(report, tmp_path, quick=True, seed=0)
    assert (tmp_path / "curation" / "run" / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "curation" / "clusters" / "assign_level2.npy").is_file()
    assert "dynamic curation" in report.to_html()
