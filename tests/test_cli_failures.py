"""Every user-facing failure of the command line: one line naming the input, exit 2 (3 for a
diverged run, 130 for Ctrl-C), no traceback, and nothing on disk lost or half-written.

One test per class of failure, driven through ``main([...])`` on tiny sizes and the
bundled images (a fake CelebA folder where a folder is needed)."""

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

import jfb_core.train
from jfb_core.cli import main
from jfb_core.data import load_cache
from jfb_core.train import RunLock, load_checkpoint

TINY = ["--preset", "fast", "--size", "16", "--depth", "2", "--width", "4", "--n-train", "8", "--n-eval", "4",
        "--batch-size", "4", "--max-iter", "20"]


def _run(capsys, argv):
    """``(exit status, stderr)`` of ``main(argv)``; an argparse error counts as its exit status."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refuses a malformed flag itself, with status 2
        code = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def _train(capsys, out, *extra):
    return _run(capsys, ["train", *TINY, "--epochs", "1", "--pretrain-epochs", "0", "--out", str(out), *extra])


def _no_temp_files(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp") or ".tmp" in p.name]


@pytest.fixture
def run(tmp_path, capsys):
    """A finished tiny run (with pretraining, so it has a denoiser)."""
    out = tmp_path / "run"
    code, err = _run(capsys, ["train", *TINY, "--epochs", "1", "--pretrain-epochs", "1", "--out", str(out)])
    assert code == 0, err
    return out


def _fake_celeba(root, numbers, corrupt=(), png=()):
    folder = root / "img_align_celeba"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for n in numbers:
        Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(folder / f"{n:06d}.jpg")
    for n in png:
        Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(folder / f"{n:06d}.png")
    for n in corrupt:
        (folder / f"{n:06d}.jpg").write_bytes(b"not a jpeg")
    return root


# ----------------------------------------------------------------- unsafe or invalid checkpoints

def test_a_crafted_checkpoint_cannot_run_code(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    # a pickle whose loading would create a file: weights_only=True must refuse it
    script = textwrap.dedent(f"""
        import pathlib, torch
        class Evil:
            def __reduce__(self):
                return (pathlib.Path.touch, (pathlib.Path({str(marker)!r}),))
        torch.save({{"config": {{}}, "model": Evil()}}, {str(evil)!r})
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    code, err = _run(capsys, ["evaluate", "--methods", "net", "--checkpoint", f"net={evil}", "--limit", "2"])
    assert code == 2 and str(evil) in err and "refused" in err
    shutil.copy(evil, tmp_path / "checkpoint.pt")
    code, err = _train(capsys, tmp_path, "--resume")
    assert code == 2 and "refused" in err
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["empty", "truncated", "random bytes", "tensor", "foreign dict"])
def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path, capsys, run, kind):
    bad = tmp_path / "bad.pt"
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "truncated":
        data = (run / "checkpoint.pt").read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif kind == "random bytes":
        bad.write_bytes(np.random.default_rng(3).bytes(3000))
    elif kind == "tensor":
        torch.save(torch.zeros(3), bad)
    else:
        torch.save({"weights": torch.zeros(3)}, bad)
    code, err = _run(capsys, ["evaluate", "--methods", "net", "--checkpoint", f"net={bad}", "--limit", "2"])
    assert code == 2 and str(bad) in err and len(err.strip().splitlines()) == 1


def test_weights_that_do_not_match_the_configuration_are_refused(tmp_path, capsys, run):
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    ckpt["config"]["width"] = 6
    bad = tmp_path / "mismatch.pt"
    torch.save(ckpt, bad)
    code, err = _run(capsys, ["evaluate", "--methods", "net", "--checkpoint", f"net={bad}", "--limit", "2"])
    assert code == 2 and "do not match its configuration" in err and str(bad) in err


# ----------------------------------------------------------------- divergence

def test_divergence_stops_keeps_the_last_good_checkpoint_and_names_the_flag(tmp_path, capsys, monkeypatch):
    out = tmp_path / "div"
    # --lr 1e6 collapses the step size at the first update: stopped, exit 3, nothing claimed
    code, err = _train(capsys, out, "--lr", "1e6", "--epochs", "3", "--n-train", "16")
    assert code == 3 and "eta collapsed" in err and "Lower --lr" in err and "nothing was saved" in err
    assert "finished" not in err and not (out / "checkpoint.pt").exists()
    # a loss that explodes after a good epoch: the epoch-1 checkpoint stays as it was
    good = tmp_path / "good"
    assert _train(capsys, good, "--n-train", "16")[0] == 0
    before = (good / "checkpoint.pt").read_bytes()
    real = jfb_core.train.measure
    monkeypatch.setattr(jfb_core.train, "measure", lambda *a, **k: real(*a, **k) * 1e4)
    code, err = _train(capsys, good, "--n-train", "16", "--epochs", "3", "--resume", "--checkpoint-every", "100")
    assert code == 3 and "the loss rose" in err and "last good state (epoch 1, step 4)" in err
    assert (good / "checkpoint.pt").read_bytes() == before and not _no_temp_files(good)
    model, ckpt = load_checkpoint(good / "checkpoint.pt")
    assert ckpt["epoch"] == 1 and all(torch.isfinite(p).all() for p in model.parameters())


def test_the_guard_sees_a_solve_that_stops_converging():
    guard = jfb_core.train.DivergenceGuard(patience=3)
    for _ in range(3):
        assert guard.check(1e-3, 0.4, 1.0, 1.0) is None
    assert guard.check(1e-3, 0.4, 1.0, 0.1) is None and guard.check(1e-3, 0.4, 1.0, 0.2) is None
    assert "stopped converging" in guard.check(1e-3, 0.4, 1.0, 0.0)
    # a run that never converged well from the start is not stopped for it
    slow = jfb_core.train.DivergenceGuard(patience=3)
    assert all(slow.check(1e-3, 0.4, 1.0, 0.2) is None for _ in range(10))
    loss = jfb_core.train.DivergenceGuard()
    assert loss.check(1e-3, 0.4, 1.0, None) is None and "rose" in loss.check(1.0, 0.4, 1.0, None)
    eta = jfb_core.train.DivergenceGuard()
    assert eta.check(1e-3, 0.4, 1.0, None) is None and "step size eta collapsed" in eta.check(1e-3, 1e-5, 1.0, None)


# ----------------------------------------------------------------- one writer per run

def test_a_second_process_on_the_same_run_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "busy"
    with RunLock(out):  # another holder of the folder (a second open file description)
        code, err = _train(capsys, out)
    assert code == 2 and "in use by another training process" in err and str(os.getpid()) in err
    assert not (out / "checkpoint.pt").exists()
    # a lock left by a process that died does not block
    holder = subprocess.Popen([sys.executable, "-c", f"from jfb_core.train import RunLock; import time\n"
                               f"l = RunLock({str(out)!r}).__enter__(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    code, err = _train(capsys, out)
    assert code == 2 and str(holder.pid) in err
    holder.kill()
    holder.wait()
    code, err = _train(capsys, out)
    assert code == 0, err
    # and a finished run is not overwritten by a new one without --resume
    code, err = _train(capsys, out)
    assert code == 2 and "--resume" in err
    assert not _no_temp_files(out)


def test_temporary_names_are_unique_per_call():
    from jfb_core.provenance import _temp_name

    names = {_temp_name(__import__("pathlib").Path("/x/log.json")) for _ in range(50)}
    assert len(names) == 50 and all(str(os.getpid()) in n.name for n in names)


# ----------------------------------------------------------------- user errors, no tracebacks

def test_a_corrupt_or_foreign_data_cache_is_a_clear_error(tmp_path, capsys):
    bads = []
    for seed in range(6):  # random bytes fail inside the unpickler in many different ways
        bads.append(tmp_path / f"garbage{seed}.pt")
        bads[-1].write_bytes(np.random.default_rng(seed).bytes(2000))
    bads.append(tmp_path / "pickled.pt")
    bads[-1].write_bytes(b"\x80\x02" + np.random.default_rng(9).bytes(500))  # a pickle header, then noise
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(2, 3, 16, 16, dtype=torch.uint8), tensor)
    for bad in (*bads, tensor):
        code, err = _train(capsys, tmp_path / f"run_{bad.stem}", "--data-cache", str(bad))
        assert code == 2 and str(bad) in err and "prepare" in err


@pytest.mark.parametrize("argv, words", [
    (["--device", "bogus"], "--device 'bogus'"),
    (["--threads", "-1"], None),
    (["--unroll-k", "0", "--grad-mode", "unrolled"], None),
    (["--data-step", "proximal", "--rho", "0.5", "--grad-mode", "ift", "--backward-solver", "cg_normal"],
     "--backward-solver cg_normal"),
    (["--n-train", "0"], "--n-train"),
    (["--epochs", "0"], "--epochs"),
    (["--max-steps", "0"], None),
    (["--grad-mode", "ift", "--backward-max-iter", "0"], "--backward-max-iter"),
    (["--grad-mode", "ift", "--backward-tol", "0"], "--backward-tol"),
    (["--n-eval", "0"], "--n-eval"),
    (["--crop", "4"], "--crop"),
    (["--batch-size", "0"], "--batch-size"),
    (["--max-seconds", "0"], None),
])
def test_bad_training_flags_are_refused_before_any_work(tmp_path, capsys, argv, words):
    out = tmp_path / "r"
    code, err = _train(capsys, out, *argv)
    assert code == 2
    flag = argv[0] if words is None else words
    assert flag.split()[0] in err.strip().splitlines()[-1]  # named in the error line, not only in the usage text
    assert not (out / "checkpoint.pt").exists()


def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, err = _train(capsys, tmp_path / "r", "--device", "cuda")
    assert code == 2 and "no CUDA GPU" in err


def test_a_lipschitz_target_above_one_is_said(tmp_path, capsys):
    code, err = _train(capsys, tmp_path / "r", "--lipschitz", "1.5", "--max-steps", "1")
    assert code == 0 and "Theorem 3.1" in err and "1.5" in err


def test_ctrl_c_names_the_last_checkpoint_and_keeps_it(tmp_path, capsys, monkeypatch):
    real, calls = jfb_core.train.measure, []

    def interrupt_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(jfb_core.train, "measure", interrupt_third)
    out = tmp_path / "r"
    code, err = _train(capsys, out, "--checkpoint-every", "1", "--n-train", "16")
    assert code == 130 and "interrupted; the last checkpoint is" in err and str(out / "checkpoint.pt") in err
    _, ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["steps"] == 2 and ckpt["partial"]["batch"] == 2
    monkeypatch.setattr(jfb_core.train, "measure", real)
    code, err = _train(capsys, out, "--checkpoint-every", "1", "--n-train", "16", "--resume")
    assert code == 0 and "resuming" in err


# ----------------------------------------------------------------- silently wrong inputs

@pytest.mark.parametrize("argv, flag", [
    (["--limit", "0"], "--limit"), (["--limit", "-1"], "--limit"), (["--n-val", "0"], "--n-val"),
    (["--split", "val"], "--split"), (["--tv-grid", "a,b"], "--tv-grid"), (["--device", "nope"], "--device"),
])
def test_bad_evaluation_flags_are_refused(tmp_path, capsys, argv, flag):
    code, err = _run(capsys, ["evaluate", "--methods", "direct", "--out", str(tmp_path / "e.json"), *argv])
    assert code == 2 and flag in err
    assert not (tmp_path / "e.json").exists()


def test_a_checkpoint_not_in_methods_is_not_recorded_as_scored(tmp_path, capsys, run):
    ck = f"net={run / 'checkpoint.pt'}"
    code, err = _run(capsys, ["evaluate", "--methods", "direct", "--checkpoint", ck, "--limit", "2",
                              "--n-val", "2", "--out", str(tmp_path / "e.json")])
    assert code == 2 and "'net' is not in --methods" in err
    # as Plug-and-Play's denoiser alone it is fine, and is then not a scored row
    code, err = _run(capsys, ["evaluate", "--methods", "pnp", "--checkpoint", ck, "--limit", "2", "--n-val", "2",
                              "--pnp-step", "1", "--pnp-max-iter", "3", "--size", "16",
                              "--out", str(tmp_path / "e.json")])
    assert code == 0, err
    import json

    data = json.loads((tmp_path / "e.json").read_text())
    assert set(data["methods"]) == {"pnp"} and set(data["learned"]) == {"pnp"}


def test_prepare_refuses_to_overwrite_an_unwritable_or_directory_out(tmp_path, capsys):
    root = _fake_celeba(tmp_path / "celeba", [1, 2, 8001])
    out = tmp_path / "cache.pt"
    code, err = _run(capsys, ["prepare", "--data", str(root), "--size", "16", "--out", str(out)])
    assert code == 0, err
    before = out.read_bytes()
    code, err = _run(capsys, ["prepare", "--data", str(root), "--size", "8", "--out", str(out)])
    assert code == 2 and "--force" in err and out.read_bytes() == before
    code, err = _run(capsys, ["prepare", "--data", str(root), "--size", "8", "--out", str(out), "--force"])
    assert code == 0 and load_cache(out)["size"] == 8
    code, err = _run(capsys, ["prepare", "--data", str(root), "--size", "8", "--out", str(tmp_path)])
    assert code == 2 and "is a directory" in err
    code, err = _run(capsys, ["prepare", "--data", str(root), "--size", "8", "--out", str(out / "x.pt")])
    assert code == 2 and "not a writable folder" in err


def test_prepare_skips_huge_and_duplicate_images_and_evaluate_skips_corrupt_ones(tmp_path, capsys, monkeypatch):
    root = _fake_celeba(tmp_path / "celeba", [1, 2, 3, 8001, 8002, 8003], corrupt=[8004], png=[2])
    big = root / "img_align_celeba" / "000003.jpg"
    Image.fromarray(np.zeros((400, 400, 3), dtype=np.uint8)).save(big)  # over the limit set below
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)  # 400 x 400 > 2x the limit: a bomb
    out = tmp_path / "c.pt"
    code, err = _run(capsys, ["prepare", "--data", str(root), "--size", "16", "--out", str(out)])
    assert code == 0
    cache = load_cache(out)
    assert sorted(cache["ids"].tolist()) == [1, 2, 8001, 8002, 8003]  # 2 once, 3 (bomb) and 8004 skipped
    assert any("000003.jpg" in s for s in cache["skipped"]) and any("000002.png" in s for s in cache["skipped"])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)
    code, err = _run(capsys, ["evaluate", "--data", str(root), "--methods", "direct", "--size", "16",
                              "--n-val", "2", "--out", str(tmp_path / "e.json")])
    assert code == 0 and "skipped 1 unreadable" in err and "008004.jpg" in err
    import json

    data = json.loads((tmp_path / "e.json").read_text())
    assert len(data["methods"]["direct"]["per_image"]["psnr"]) == 3 and len(data["skipped_files"]) == 1


# ----------------------------------------------------------------- resume integrity

def test_resume_refuses_changes_that_shape_the_result(tmp_path, capsys):
    out = tmp_path / "r"
    assert _train(capsys, out)[0] == 0
    for flag, value in (("--tol", "1e-2"), ("--max-iter", "7"), ("--pretrain-epochs", "1"), ("--lr", "1e-2")):
        code, err = _train(capsys, out, "--resume", "--epochs", "2", flag, value)
        assert code == 2 and flag.lstrip("-").replace("-", "_") in err
    code, err = _train(capsys, out, "--resume", "--epochs", "2", "--eval-every", "1")  # reporting may change
    assert code == 0, err
    _, ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["epoch"] == 2 and ckpt["resumes"][0]["changed"]["epochs"] == [1, 2]


def test_a_data_cache_is_recognised_by_content_not_path(tmp_path, capsys):
    root = _fake_celeba(tmp_path / "celeba", [1, 2, 3, 4, 8001, 8002])
    first = tmp_path / "a.pt"
    assert _run(capsys, ["prepare", "--data", str(root), "--size", "16", "--out", str(first)])[0] == 0
    out = tmp_path / "r"
    flags = ["--data-cache", str(first), "--n-train", "4"]
    assert _train(capsys, out, *flags)[0] == 0
    moved = tmp_path / "moved.pt"
    shutil.move(first, moved)  # the same data at a new path resumes
    code, err = _train(capsys, out, "--data-cache", str(moved), "--n-train", "4", "--resume", "--epochs", "2")
    assert code == 0, err
    other = _fake_celeba(tmp_path / "other", [1, 2, 3, 4, 8001, 8002, 8003])  # other content, the old path
    assert _run(capsys, ["prepare", "--data", str(other), "--size", "16", "--out", str(moved), "--force"])[0] == 0
    code, err = _train(capsys, out, "--data-cache", str(moved), "--n-train", "4", "--resume", "--epochs", "3")
    assert code == 2 and "data_hash" in err and "content" in err


def test_a_programming_error_keeps_its_traceback(monkeypatch):
    """Only user errors become exit 2: a TypeError inside the library is a bug and is not hidden."""
    import jfb_core.cli

    def broken(args):
        raise TypeError("unsupported operand")

    monkeypatch.setattr(jfb_core.cli, "_cmd_info", broken)
    with pytest.raises(TypeError, match="unsupported operand"):
        jfb_core.cli.main(["info"])


def test_train_max_seconds_stops_cleanly_and_the_run_resumes_with_more(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", *TINY, "--epochs", "20", "--pretrain-epochs", "0", "--out", str(out),
                 "--max-seconds", "0.01"]) == 0
    assert capsys.readouterr().out.startswith("time budget: 1 epoch(s) logged")
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["config"]["max_seconds"] == 0.01 and ckpt["steps"] == 1
    # a larger budget on --resume continues the same run (max_seconds may change on resume)
    assert main(["train", *TINY, "--epochs", "20", "--pretrain-epochs", "0", "--out", str(out),
                 "--max-seconds", "1000", "--max-steps", "3", "--resume"]) == 0
    assert capsys.readouterr().out.startswith("max_steps")
    assert torch.load(out / "checkpoint.pt", weights_only=True)["steps"] == 3


def test_evaluate_writes_under_runs_by_default_never_into_results(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--preset", "fast", "--size", "16", "--methods", "direct", "--limit", "1",
                 "--n-val", "1"]) == 0
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.json"))
    assert written and all(p.startswith("runs/eval/") for p in written)
    assert not (tmp_path / "results").exists()


# ----------------------------------------------------------------- output paths that cannot be written

_OUT_COMMANDS = {
    "train": lambda out: ["train", *TINY, "--epochs", "1", "--pretrain-epochs", "0", "--out", str(out)],
    "evaluate": lambda out: ["evaluate", "--preset", "fast", "--size", "16", "--methods", "direct", "--limit", "1",
                             "--n-val", "1", "--out", str(out)],
    "bench": lambda out: ["bench", "memory", "--preset", "fast", "--size", "8", "--batch", "1", "--out", str(out)],
    "paper-run": lambda out: ["paper-run", *TINY, "--data-cache", "missing.pt", "--budget", "10", "--out", str(out)],
}


@pytest.mark.parametrize("command", sorted(_OUT_COMMANDS))
def test_a_read_only_out_is_refused_before_any_work(tmp_path, capsys, monkeypatch, command):
    """A read-only file system (simulated: creating any file under tmp_path fails with EROFS)."""
    import errno
    import tempfile

    real = tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):
        if dir is not None and str(dir).startswith(str(tmp_path)):
            raise OSError(errno.EROFS, "Read-only file system", str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    out = tmp_path / "ro" / ("run" if command in ("train", "paper-run") else "out.json")
    code, err = _run(capsys, _OUT_COMMANDS[command](out))
    assert code == 2 and str(out) in err and "Read-only file system" in err
    assert len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # nothing created, not even the parent folder


@pytest.mark.parametrize("command", sorted(_OUT_COMMANDS))
def test_a_dangling_symlink_out_is_refused_and_its_target_not_created(tmp_path, capsys, command):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere" / "target")
    code, err = _run(capsys, _OUT_COMMANDS[command](link))
    assert code == 2 and str(link) in err and "symbolic link" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link"]


@pytest.mark.parametrize("command", sorted(_OUT_COMMANDS))
def test_an_out_below_a_file_is_refused(tmp_path, capsys, command):
    (tmp_path / "plain").write_text("x")
    out = tmp_path / "plain" / "sub" / "x.json"
    code, err = _run(capsys, _OUT_COMMANDS[command](out))
    assert code == 2 and str(out) in err and len(err.strip().splitlines()) == 1


def test_a_write_that_fails_midway_exits_2_and_leaves_nothing_half_written(tmp_path, capsys, monkeypatch):
    """The disk turns read-only after the up-front check: the checkpoint write fails, one line,
    exit 2, and no temporary file is left in the run folder."""
    import errno

    import jfb_core.provenance

    def refuse(src, dst):
        raise OSError(errno.EROFS, "Read-only file system", str(dst))

    monkeypatch.setattr(jfb_core.provenance.os, "replace", refuse)
    out = tmp_path / "run"
    code, err = _train(capsys, out)
    last = err.strip().splitlines()[-1]  # after the progress bar: one line naming the file
    assert code == 2 and last.startswith("error:") and "checkpoint.pt: Read-only file system" in last
    assert _no_temp_files(out) == [] and not (out / "checkpoint.pt").exists()


def test_prepare_skips_and_counts_an_image_too_large_for_memory(tmp_path, capsys, monkeypatch):
    """An image under PIL's pixel limit whose decoding runs out of memory (simulated: the
    decoder raises MemoryError for one file) is skipped and counted like an unreadable one."""
    from PIL import Image

    root = _fake_celeba(tmp_path / "celeba", [1, 2, 3, 8001])
    real_open = Image.open

    def open_(path, *args, **kwargs):
        if str(path).endswith("000002.jpg"):
            raise MemoryError
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", open_)
    out = tmp_path / "c.pt"
    code, err = _run(capsys, ["prepare", "--data", str(root), "--size", "16", "--out", str(out)])
    assert code == 0, err
    cache = load_cache(out)
    assert sorted(cache["ids"].tolist()) == [1, 3, 8001]
    assert [s for s in cache["skipped"] if "000002.jpg" in s and "memory" in s]
