import json
import subprocess
import sys

from jfb_core.cli import COMMANDS, main


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "jfb_core", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for name in ("train", "evaluate", "bench", "prepare"):
        assert name in out and name in COMMANDS


def test_info_prints_environment_and_preset(capsys, monkeypatch):
    monkeypatch.delenv("JFB_PRESET", raising=False)
    assert main(["info", "--preset", "paper"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["preset"]["name"] == "paper"
    assert "torch" in data["environment"]


def test_bad_preset_env_is_a_clear_error(capsys, monkeypatch):
    monkeypatch.setenv("JFB_PRESET", "nonsense")
    assert main(["info"]) == 2
    assert "unknown preset 'nonsense'" in capsys.readouterr().err


def test_bench_backward_writes_json_with_provenance_and_a_png(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("JFB_PRESET", raising=False)
    out = tmp_path / "bb.json"
    assert main(["bench", "backward", "--sizes", "8", "--repeats", "1", "--forward-iters", "3",
                 "--methods", "jfb,ift_fp", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["rows"][0]["size"] == 8 and set(data["rows"][0]["methods"]) == {"jfb", "ift_fp"}
    assert data["provenance"]["config"]["name"] == "fast" and "torch" in data["provenance"]["environment"]
    assert (tmp_path / "bb.png").stat().st_size > 10_000
    assert "ift_fp/jfb" in capsys.readouterr().out
