"""Every command spells its output option -o/--out; older spellings are hidden aliases."""

import click
import pytest
from click.testing import CliRunner

from eokit.cli import cli


def _commands(group, ctx, prefix=()):
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None:
            continue
        if isinstance(command, click.Group):
            yield from _commands(command, ctx, (*prefix, name))
        else:
            yield (*prefix, name), command


def test_output_options_are_spelled_one_way():
    ctx = click.Context(cli)
    seen = 0
    for path, command in _commands(cli, ctx):
        for param in command.params:
            names = set(getattr(param, "opts", []))
            if names & {"--out", "--out-dir", "--output"}:
                seen += 1
                assert {"-o", "--out"} <= names, f"eokit {' '.join(path)}: {sorted(names)}"
                record = param.get_help_record(ctx)
                assert record is not None and record[0].startswith("-o, --out"), path
                assert "--out-dir" not in record[0] and "--output" not in record[0], path
    assert seen >= 15


@pytest.mark.parametrize("spelling", ["-o", "--out", "--out-dir", "--output"])
def test_every_spelling_still_works(tmp_path, spelling):
    out = tmp_path / "scene"
    result = CliRunner().invoke(cli, ["synth", "scene", spelling, str(out), "--size", "32"])
    assert result.exit_code == 0, result.output
    assert (out / "landcover.tif").is_file()


def test_every_option_has_help():
    ctx = click.Context(cli)
    missing = [f"eokit {' '.join(path)} {param.opts[-1]}"
               for path, command in _commands(cli, ctx) for param in command.params
               if isinstance(param, click.Option) and not param.hidden and not param.help]
    assert not missing, missing


def test_model_size_is_not_spelled_like_scene_size():
    ctx = click.Context(cli)
    pretrain = dict(_commands(cli, ctx))[("timeseries", "pretrain")]
    option = next(p for p in pretrain.params if p.name == "model_size")
    assert option.get_help_record(ctx)[0].startswith("--model-size")
    assert "--size" in option.opts  # still accepted
