"""The table of experiments (`python -m jfb_core reproduce`): every command parses, every
artefact it names is committed, the Makefile calls it, and its non-command steps work."""

import json
import re
import shutil
from pathlib import Path

import pytest

from jfb_core import experiments as ex
from jfb_core.cli import build_parser, main
from jfb_core.errors import UserError
from jfb_core.train import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CTX = ex.Context(data="/celeba", runs="/runs", threads=2)


def _cmds():
    for e in ex.EXPERIMENTS.values():
        for step in e.steps:
            for cmd in step.cmds if isinstance(step, ex.Parallel) else (step,) if isinstance(step, ex.Cmd) else ():
                yield e, cmd


@pytest.mark.parametrize("name", list(ex.EXPERIMENTS))
def test_every_command_of_an_experiment_parses_with_the_real_command_line(name):
    parser = build_parser()
    for e, cmd in _cmds():
        if e.name == name:
            argv = CTX.argv(cmd)
            assert not any("{" in a or "}" in a for a in argv), argv  # every placeholder filled
            parser.parse_args(argv)  # an unknown flag or a bad value exits here


def test_every_artefact_an_experiment_names_is_committed():
    outs = [b for _, c in _cmds() if CTX.argv(c)[0] in ("evaluate", "bench")
            for a, b in zip(CTX.argv(c), CTX.argv(c)[1:]) if a == "--out"]
    committed = [o for o in outs if o.startswith("results/")]
    assert len(committed) == len(outs), "every evaluation and benchmark writes into results/"
    assert len(set(outs)) == len(outs), "two steps write the same file"
    missing = [o for o in committed if not (ROOT / o).is_file()]
    assert not missing, missing
    dests = [s.dest for e in ex.EXPERIMENTS.values() for s in e.steps if isinstance(s, ex.Publish)]
    assert not [d for d in dests if not (ROOT / d / "checkpoint.pt").is_file()]
    # and each committed evaluation names the method set its experiment asks for
    for _, c in _cmds():
        argv = CTX.argv(c)
        if argv[0] == "evaluate" and "--methods" in argv:
            methods = argv[argv.index("--methods") + 1].split(",")
            record = json.loads((ROOT / argv[argv.index("--out") + 1]).read_text())
            assert list(record["methods"]) == methods, argv[argv.index("--out") + 1]


def test_the_makefile_runs_every_experiment_through_the_table():
    makefile = (ROOT / "Makefile").read_text()
    listed = re.search(r"^EXPERIMENTS = (.*?)(?<!\\)\n", makefile, flags=re.M | re.S).group(1)
    assert listed.replace("\\", " ").split() == list(ex.EXPERIMENTS)
    assert "jfb_core reproduce" in makefile
    for command in ("train", "evaluate", "bench", "prepare"):  # no experiment written in shell any more
        assert f"jfb_core {command} " not in makefile
    assert set(ex.ALL) <= set(ex.EXPERIMENTS)


def test_list_dry_run_and_mistakes(capsys):
    assert main(["reproduce", "--list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in ex.EXPERIMENTS)
    assert main(["reproduce", "tv-exact", "--dry-run", "--data", "/celeba", "--runs", "/r"]) == 0
    out = capsys.readouterr().out
    assert "python -m jfb_core evaluate --preset paper --data /celeba --size 64 --blur 5x5_s1" in out
    assert main(["reproduce", "tv-exact"]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["reproduce", "no-such-run"]) == 2
    assert "tv-exact" in capsys.readouterr().err  # the error lists the names
    assert main(["reproduce"]) == 2
    lines = ex.reproduce(["all"], CTX, dry_run=True)
    assert [ln for ln in lines if ln.startswith("## ")] == [f"## {n}: {ex.EXPERIMENTS[n].description}" for n in ex.ALL]


def test_steps_run_through_the_launcher_and_a_failure_names_its_command(tmp_path):
    calls = []
    ctx = ex.Context(data="/celeba", runs=str(tmp_path))

    def launch(argvs):
        calls.append(argvs)
        return 0

    ex.run_step(ex.Cache(64), ctx, launch)  # no cache yet: prepare runs
    assert calls == [[["prepare", "--data", "/celeba", "--size", "64", "--out", f"{tmp_path}/celeba_paper_64.pt"]]]
    (tmp_path / "celeba_paper_64.pt").write_bytes(b"")
    ex.run_step(ex.Cache(64), ctx, launch)  # there now: nothing runs
    assert len(calls) == 1
    ex.run_step(ex.Parallel((ex.Cmd("bench memory"), ex.Cmd("bench solvers"))), ctx, launch)
    assert calls[-1] == [["bench", "memory"], ["bench", "solvers"]]
    with pytest.raises(UserError, match="exit status 3.*bench memory"):
        ex.run_step(ex.Cmd("bench memory"), ctx, lambda argvs: 3)


def test_publish_and_continue_move_checkpoints_that_still_load(tmp_path):
    src = ROOT / "results/train/celeba64_5x5_s1_ablation_plain"
    run = tmp_path / "runs" / "ablation64_plain"
    shutil.copytree(src, run)
    dest = tmp_path / "results" / "plain"
    ex.publish(run, dest)
    assert (dest / "log.json").read_bytes() == (src / "log.json").read_bytes()
    ckpt = read_checkpoint(dest / "checkpoint.pt")
    assert ckpt["model"].keys() == read_checkpoint(src / "checkpoint.pt")["model"].keys()
    with pytest.raises(UserError, match="no log.json"):
        ex.publish(tmp_path / "empty", dest)
    # continue: copies the committed checkpoint into a run without one, never over one
    ctx = ex.Context(runs=str(tmp_path / "runs"))
    ex.run_step(ex.Continue(str(dest), "fresh"), ctx, launch=None)
    assert (tmp_path / "runs/fresh/checkpoint.pt").read_bytes() == (dest / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(b"mine")
    ex.run_step(ex.Continue(str(dest), "ablation64_plain"), ctx, launch=None)
    assert (run / "checkpoint.pt").read_bytes() == b"mine"
