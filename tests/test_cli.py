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


def test_bench_backward_saves_each_size_as_it_goes_and_honours_warmup(tmp_path, monkeypatch):
    monkeypatch.delenv("JFB_PRESET", raising=False)
    out = tmp_path / "bb.json"
    seen = []
    real = __import__("jfb_core.bench", fromlist=["bench_backward"]).bench_backward

    def spy(*args, **kwargs):
        assert kwargs["warmup"] == 0
        inner = kwargs["on_row"]

        def on_row(rows):
            inner(rows)
            seen.append(json.loads((tmp_path / "bb.json.partial").read_text()))
        kwargs["on_row"] = on_row
        return real(*args, **kwargs)

    monkeypatch.setattr("jfb_core.bench.bench_backward", spy)
    import torch
    threads = torch.get_num_threads()
    try:
        assert main(["bench", "backward", "--sizes", "8,12", "--repeats", "1", "--warmup", "0", "--threads", "1",
                     "--forward-iters", "2", "--methods", "jfb", "--out", str(out)]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    # one partial file per finished size, holding the rows so far; gone once the full JSON is written
    assert [[r["size"] for r in p["rows"]] for p in seen] == [[8], [8, 12]]
    assert all(p["complete"] is False for p in seen)
    assert not (tmp_path / "bb.json.partial").exists()
    assert json.loads(out.read_text())["warmup"] == 0
