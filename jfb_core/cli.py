"""Command line: ``python -m jfb_core {info,prepare,train,evaluate,bench} ...``.

The command line is where progress is printed; the library itself never prints.
"""

from __future__ import annotations

import argparse
import ctypes
import copy
import dataclasses
import errno
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from jfb_core import bench
from jfb_core.bench import BACKWARD_METHODS
from jfb_core.config import (ACTIVATIONS, ARCHS, BLURS, DATA_STEPS, get_preset, GRAD_MODES,
    PADDINGS, Preset, PRESETS)
from jfb_core.data import bundled_images, CelebAFolder, prepare_celeba, readable_batches
from jfb_core.errors import UserError
from jfb_core.evaluate import (CLASSICAL_METHODS, ClassicalSettings, degrad_method, evaluate_classical, format_weight,
    LearnedMethod, plot_grid, pnp_method, Split)
from jfb_core import experiments
from jfb_core.gradients import IFT, IFT_SOLVERS, Neumann, Unrolled
from jfb_core.models import certify_stored_norms, lipschitz_certificate
from jfb_core.paper import paper_run
from jfb_core.provenance import check_writable, environment_info, provenance, write_json
from jfb_core.solvers import DEFAULT_FORWARD_SOLVER, FORWARD_SOLVERS
from jfb_core.train import (check_compatible, check_trainable, DATA_KEYS, EVAL_SPLITS, load_checkpoint, load_weights, read_checkpoint,
    split_config, train, TrainingDiverged, TrainOptions)


COMMANDS = {
    "info": "show versions, device and the active preset",
    "prepare": "decode and resize a CelebA folder once into a compact cache",
    "train": "train DE-GRAD (JFB, IFT, Neumann or unrolled backward)",
    "evaluate": "PSNR/SSIM of reconstructions on a data split",
    "bench": "timing and memory benchmarks, written as JSON with provenance",
    "paper-run": "the paper-scale experiment within a time budget: train JFB and IFT, score both beside TV",
    "reproduce": "re-run the experiments behind the committed results by name (--list shows them)",
}


def tune_allocator() -> bool:
    """Keep freed memory in the process (glibc: no ``mmap`` for large blocks, no trimming).

    By default glibc serves every allocation above 32 MiB by ``mmap`` and returns it on
    free, so each such tensor (one 16 x 32 x 128 x 128 activation is exactly 32 MiB) is
    page-faulted in afresh: one evaluation of a 6 x 32 CPLNet's T at 128 px, batch 16, one
    thread, took 2.2 s that way against 1.1 s with this setting (a one-off timing on this
    course's CPU, not a committed benchmark). A process-wide setting, so the command line makes it, not the library.
    Returns whether it applied (False off glibc)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-4, 0)) and bool(libc.mallopt(-1, 2**31 - 1))  # M_MMAP_MAX, M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        return False


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def number_list(text: str, flag: str, kind: type = float) -> tuple:
    """``"1e-3,2e-3"`` as a tuple of numbers; a :class:`UserError` naming ``flag`` otherwise."""
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected comma-separated {'numbers' if kind is float else 'whole numbers'}") \
            from None
    if not values:
        raise UserError(f"{flag} is empty: give at least one value")
    return values


def _positive_list(text: str, flag: str) -> tuple:
    values = number_list(text, flag)
    if not all(v > 0 for v in values):
        raise UserError(f"{flag} {text!r}: every value must be positive")
    return values


def check_device(device: str) -> str:
    """``device`` if torch knows it and it is present here, else a :class:`UserError`."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {device!r} is not a device; use cpu or cuda (cuda:N for one GPU)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA GPU is available here; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s)")
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"--device {device}: only cpu and cuda are supported")
    return device


def _add_preset(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="scale preset (default: $JFB_PRESET, else 'fast')")


def _cmd_info(args: argparse.Namespace) -> int:
    preset = get_preset(args.preset)
    print(json.dumps({"environment": environment_info(), "preset": preset.to_dict()}, indent=2))
    return 0


def _evaluation_data(args: argparse.Namespace, preset, skipped: list[str]):
    """``(split name, validation batch, test Split)`` from a CelebA folder or the bundled images."""
    dataset = "celeba" if args.data else preset.dataset
    size, bs = preset.image_size, args.batch_size
    if dataset == "celeba":
        split = args.split or "test"
        val_range = "train" if args.subset == "paper" else "val"
        val_ds = CelebAFolder(args.data, val_range, size=size, subset=args.subset)
        val_ds.files = val_ds.files[-args.n_val:]  # the last images of the training range
        test_ds = CelebAFolder(args.data, split, size=size, subset=args.subset, limit=args.limit)
        val_batches = list(readable_batches(val_ds, len(val_ds.files), skipped))
        if not val_batches:
            raise UserError(f"none of the {len(val_ds.files)} validation images in {val_ds.directory} is readable")
        val = val_batches[0]

        def images():
            yield from readable_batches(test_ds, bs, skipped)

        test = Split(f"celeba-{args.subset}-{split}", images, size,
                     f"CelebA {args.subset} subset, {split} split, {len(test_ds)} images, "
                     f"whole image resized to {size}x{size}; validation: {len(val_ds)} images "
                     f"{'at the end of the training range' if args.subset == 'paper' else 'of the official val split'}")
    else:
        if args.split not in (None, "test"):
            raise UserError(f"--split {args.split}: the bundled images have one test split; pass --data "
                            f"/path/to/celeba to score another split")
        split = "test"
        x_val = bundled_images("val", size, n=min(args.n_val, preset.n_val), seed=preset.seed)
        val = (list(range(len(x_val))), x_val)
        x_test = bundled_images("test", size, n=args.limit or preset.n_test, seed=preset.seed)

        def images():
            for start in range(0, len(x_test), bs):
                batch = x_test[start:start + bs]
                yield [100_000 + start + i for i in range(len(batch))], batch

        test = Split("bundled-test", images, size, f"bundled test photographs, {len(x_test)} crops of {size}x{size}")
    return split, val, test


def _report_evaluation(result: dict, images, methods: list[str], out: str, test_name: str, preset,
                       skipped: list[str]) -> None:
    """The grid figure (with ``--grid``) and the table printed after an evaluation."""
    if images is not None:
        names = {"truth": "ground truth", "measured": "noisy blurred", "direct": "direct inverse",
                 "tikhonov": "Tikhonov", "tv": "gradient descent, TV", "pnp": "Plug-and-Play",
                 "degrad_jfb": "DE-GRAD, JFB", "degrad_ift": "DE-GRAD, IFT"}
        labels = {k: names.get(k, k) for k in ["truth", "measured", *methods]}
        png = out[:-5] + "_grid.png" if out.endswith(".json") else out + "_grid.png"
        plot_grid(images, labels, png, title=f"{test_name}, {preset.blur}, noise {preset.noise_std}, "
                                              f"{preset.image_size}x{preset.image_size}")
        print(f"wrote {png}")
    print(f"{'method':>10} {'weight':>8} {'PSNR (dB)':>10} {'SSIM':>7}")
    m = result["measurement"]
    print(f"{'measured':>10} {'':>8} {m['psnr_mean']:10.2f} {m['ssim_mean']:7.3f}")
    for name, r in result["methods"].items():
        print(f"{name:>10} {format_weight(r['weight'], '{:.0e}'):>8} {r['psnr_mean']:10.2f} {r['ssim_mean']:7.3f}")
    if skipped:
        print(f"skipped {len(skipped)} unreadable file(s): {'; '.join(skipped[:3])}", file=sys.stderr)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    preset = get_preset(args.preset)
    check_device(args.device)
    overrides = {k: v for k, v in (("blur", args.blur), ("padding", args.padding),
                                   ("image_size", args.size)) if v is not None}
    preset = preset.replace(**overrides) if overrides else preset
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    learned = _learned_methods(args, preset, methods)
    unknown = sorted(set(methods) - set(CLASSICAL_METHODS) - set(learned))
    if unknown:
        raise UserError(f"unknown method(s) {unknown}; available: {list(CLASSICAL_METHODS)}, 'pnp' (needs "
                         f"--checkpoint) and the names given with --checkpoint")
    skipped: list[str] = []  # unreadable image files, skipped and counted as prepare does
    split, val, test = _evaluation_data(args, preset, skipped)
    # runs/ by default: the committed results/ artefacts are regenerated by `make reproduce` only
    out = str(check_writable(args.out or f"runs/eval/{test.name}_{preset.blur}_{preset.padding}.json"))
    settings = ClassicalSettings()
    if args.tv_grid:
        settings.tv_grid = number_list(args.tv_grid, "--tv-grid")
    if args.tv_delta:
        settings.tv_delta_grid = _positive_list(args.tv_delta, "--tv-delta")
    if args.tv_exact_grid:
        settings.tv_exact_grid = number_list(args.tv_exact_grid, "--tv-exact-grid")
    if args.tv_exact_gap is not None:
        settings.tv_exact_gap_tol = args.tv_exact_gap
    t0 = time.perf_counter()
    result = evaluate_classical(methods, preset.blur, preset.padding, preset.noise_std, val, test,
                                seed=args.seed, device=args.device,
                                progress=lambda msg: print(f"[{time.perf_counter() - t0:7.1f} s] {msg}",
                                                           file=sys.stderr, flush=True),
                                extra={name: (m.rec, m.grid) for name, m in learned.items()}, keep=args.grid,
                                settings=settings)
    images = result.pop("_images", None)
    result["wall_seconds"] = time.perf_counter() - t0
    result["learned"] = {name: m.record() for name, m in learned.items()}
    result["skipped_files"] = skipped
    result["provenance"] = provenance(config={**preset.to_dict(), "methods": methods, "subset": args.subset,
                                              "split": split, "n_val": args.n_val, "seed": args.seed},
                                      device=args.device)
    write_json(out, result)
    _report_evaluation(result, images, methods, out, test.name, preset, skipped)
    print(f"wrote {out}")
    return 0


def _lipschitz_record(f, size: int, certify: bool) -> dict:
    """The certificate of ``f`` at the evaluation size; with ``certify``, the stored norms are
    first replaced by their upper bounds, so the network scored meets its Lipschitz target."""

    record = {"as_trained": lipschitz_certificate(f, (size, size), power_iters=100)}
    if certify:
        certify_stored_norms(f, (size, size))
        record["as_scored"] = lipschitz_certificate(f, (size, size), power_iters=0)
    record["norms_certified_for_scoring"] = bool(certify)
    return record


def _pnp_method(args: argparse.Namespace, preset, first) -> LearnedMethod:
    """Plug-and-Play with the pretrained denoiser of the first checkpoint."""
    if first is None or first[1].get("denoiser") is None:
        raise UserError("pnp needs --checkpoint of a run with pretraining (its denoiser is used)")
    model, ckpt, path = first
    f = copy.deepcopy(model.f)  # the checkpoint's own network, with the pretrained denoiser's weights
    load_weights(f, ckpt["denoiser"], path)
    dtype = torch.float64 if args.float64 else torch.float32
    f.to(dtype).eval()
    config = {"denoiser_from": path, "pretrain_noise": ckpt["config"].get("pretrain_noise"),
              "lipschitz": _lipschitz_record(f, preset.image_size, args.certify)}
    return pnp_method(f, model.A, dtype, number_list(args.pnp_step, "--pnp-step"),
                      number_list(args.pnp_strength, "--pnp-strength"), args.pnp_max_iter, args.pnp_tol, config)


def _learned_methods(args: argparse.Namespace, preset, methods: list[str]) -> dict[str, LearnedMethod]:
    """Methods from ``--checkpoint NAME=PATH`` (DE-GRAD) and ``pnp`` (the first checkpoint's denoiser)."""
    learned: dict[str, LearnedMethod] = {}
    first = None
    for spec in args.checkpoint or []:
        name, _, path = spec.rpartition("=")
        model, ckpt = load_checkpoint(path, args.device)
        name = name or f"degrad_{model.grad_mode}"
        if name not in methods and not ("pnp" in methods and first is None):
            raise UserError(f"--checkpoint {spec}: {name!r} is not in --methods ({','.join(methods)}); add it "
                            f"there to score it (only the first checkpoint may serve pnp alone, as its denoiser)")
        if args.solve_tol is not None:  # solve further than in training, to check the fixed point itself
            model.tol = args.solve_tol
        if args.solve_max_iter is not None:
            model.max_iter = args.solve_max_iter
        if args.solve_tol is not None and model.data_step == "proximal":
            # the inner CG is warm-started at z: with its trained tolerance it stops at once when
            # (6.3) already holds that well, and the outer residual then reads 0; solve it 100x tighter
            model.inner_tol = min(model.inner_tol, args.solve_tol / 100)
            model.inner_max_iter = max(model.inner_max_iter, 1000)
        dtype = torch.float64 if args.float64 else torch.float32
        model.to(dtype)
        lipschitz = _lipschitz_record(model.f, preset.image_size, args.certify)
        check_compatible(ckpt["config"], {**ckpt["config"], **preset.to_dict()},
                         keys=DATA_KEYS, what=f"evaluate {path}")
        first = first or (model, ckpt, path)
        if name not in methods:  # only pnp's denoiser comes from it: nothing of it is scored
            continue
        learned[name] = degrad_method(model, dtype, {
            "checkpoint": path, "epoch": ckpt["epoch"], "train_seconds": ckpt["train_seconds"],
            "grad_mode": ckpt["config"]["grad_mode"], "final_log": ckpt["log"][-1] if ckpt["log"] else None,
            "lipschitz": lipschitz})
    if "pnp" in methods:
        learned["pnp"] = _pnp_method(args, preset, first)
    return learned


BENCHMARKS = ("solvers", "memory", "backward", "step")


def _bench_backward(args: argparse.Namespace, preset, device: str, out: str) -> dict:
    """``bench backward``: run it, keeping the rows so far in ``OUT.partial``, and print the ratios."""
    print(f"bench backward: preset {preset.name}, device {device}", file=sys.stderr, flush=True)
    sizes = number_list(args.sizes, "--sizes", int) if args.sizes else None
    if args.size:
        sizes = (args.size,)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    t0 = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    partial = out + ".partial"

    def save_partial(rows_so_far: list) -> None:
        # a long benchmark loses at most one image size when interrupted
        write_json(partial, {"complete": False, "rows": rows_so_far,
                             "provenance": provenance(config=preset.to_dict(), device=device)})

    result = bench.bench_backward(preset, device=device, sizes=sizes, batch=args.batch, repeats=args.repeats,
                                  warmup=args.warmup, forward_iters=args.forward_iters, methods=methods,
                                  backward_tol=args.backward_tol, backward_max_iter=args.backward_max_iter,
                                  data=args.data, on_row=save_partial,
                                  progress=lambda m: print(f"[{time.perf_counter() - t0:7.1f} s] {m}",
                                                           file=sys.stderr, flush=True))
    if os.path.exists(partial):
        os.remove(partial)
    for r in result["rows"]:
        ratios = ", ".join(f"{k}/jfb {v:.2f}" for k, v in r.get("step_ratio_to_jfb", {}).items() if k != "jfb")
        jfb = r["methods"].get("jfb")
        floor = f"; JFB backward = {jfb['backward_over_t_T']:.2f} x (T fwd+bwd)" if jfb else ""
        print(f"size {r['size']:4d}: {ratios}{floor}")
    return result


def _bench_step(args: argparse.Namespace, preset, device: str):
    """``bench step``: the profiled preset (a run's own with ``--run``) and the result, printed."""
    preset, options = _step_setup(args, preset)
    print(f"bench step: {preset.image_size} px, crop {options.crop}, certify {options.certify}, device {device}",
          file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    result = bench.bench_step(preset, options, device=device,
                              threads=number_list(args.thread_counts, "--thread-counts", int),
                              repeats=args.repeats or 3, warmup=args.warmup,
                              checkpoint_every=args.checkpoint_every,
                              progress=lambda m: print(f"[{time.perf_counter() - t0:7.1f} s] {m}",
                                                       file=sys.stderr, flush=True))
    for r in result["rows"]:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in r["parts_seconds"].items())
        print(f"{r['threads']} thread(s): step {r['step_seconds']:.2f} s ({parts}); norms "
              f"{r['norm_estimation_seconds']:.2f} s within; convolutions {r['convolution_seconds']:.2f} s "
              f"({r['step_over_convolutions']:.2f}x)")
    return preset, result


def _cmd_bench(args: argparse.Namespace) -> int:
    preset = get_preset(args.preset)
    device = check_device(args.device or ("cuda" if preset.device == "cuda" else "cpu"))
    # runs/ by default: the committed results/bench/ artefacts are regenerated by `make reproduce` only
    out = str(check_writable(args.out or f"runs/bench/{args.which}_{preset.name}_{torch_device_kind(device)}.json"))
    if args.which == "solvers":
        print(f"bench solvers: preset {preset.name}, device {device}", file=sys.stderr, flush=True)
        result = bench.bench_solvers(preset, device=device, size=args.size, batch=args.batch,
                                     repeats=args.repeats)
        for name, r in result["solvers"].items():
            print(f"{name:>12}: {r['nfe']:5d} evaluations, {r['seconds_median']:8.3f} s median, "
                  f"converged {r['converged_fraction']:.2f}")
        print(f"Anderson least-squares overhead per iteration: "
              f"{100 * result['anderson_overhead_per_iteration']:.1f}% of one evaluation")
    elif args.which == "memory":
        print(f"bench memory: preset {preset.name}, device {device}", file=sys.stderr, flush=True)
        result = bench.bench_memory(preset, device=device, size=args.size, batch=args.batch)
        for r in result["rows"]:
            print(f"{r['mode']:>9} K={r['iterations']:4d}: {r['saved_bytes'] / 2**20:9.2f} MiB saved for backward")
    elif args.which == "backward":
        result = _bench_backward(args, preset, device, out)
    elif args.which == "step":
        preset, result = _bench_step(args, preset, device)
    result["provenance"] = provenance(config=preset.to_dict(), device=device)
    write_json(out, result)
    print(f"wrote {out}")
    if args.which == "backward":
        png = out[:-5] + ".png" if out.endswith(".json") else out + ".png"
        bench.plot_backward(result, png)
        print(f"wrote {png}")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from tqdm import tqdm


    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    out = args.out or f"runs/celeba_{args.subset}_{args.size}.pt"
    bar = tqdm(total=None, unit="img", desc="decoding", file=sys.stderr, mininterval=5)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        summary = prepare_celeba(args.data, out, size=args.size, subset=args.subset, splits=splits,
                                 limit=args.limit, progress=progress, overwrite=args.force,
                                 encode=args.encode, quality=args.quality)
    finally:
        bar.close()
    counts = ", ".join(f"{k}: {v}" for k, v in summary["counts"].items())
    print(f"wrote {summary['path']} ({summary['bytes'] / 2**20:.1f} MiB; {counts}; "
          f"{len(summary['skipped'])} unreadable file(s) skipped)")
    for line in summary["skipped"][:10]:
        print(f"  skipped {line}", file=sys.stderr)
    return 0


TRAIN_OVERRIDES = ("epochs", "pretrain_epochs", "n_train", "batch_size", "lr", "seed", "blur", "eta", "depth",
                   "width", "tol", "max_iter", "lipschitz", "rho")


def _as_flag(message: str) -> str:
    """A configuration rule's message (``"n_eval must be >= 1, got 0"``) as the command line says it
    (``"--n-eval must be >= 1, got 0"``); ``image_size`` is ``--size``."""
    field, sep, rest = message.partition(" must ")
    if not sep or not field.isidentifier():
        return message
    return f"--{'size' if field == 'image_size' else field.replace('_', '-')} must {rest}"


def _train_setup(args: argparse.Namespace):
    """``(preset, options, device)`` from the training flags, checked before any work."""

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {k: getattr(args, k) for k in TRAIN_OVERRIDES if getattr(args, k) is not None}
    if args.size is not None:
        overrides["image_size"] = args.size
    for name in ("data_step", "skip", "activation", "arch"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.data_cache:
        overrides["dataset"] = "celeba"
    try:  # the rules live in Preset, TrainOptions and train.check_trainable; their messages name the field
        preset = get_preset(args.preset, **overrides)
        check_trainable(preset)
        # every TrainOptions field is a flag of the same name (tests/test_cli_train_flags.py checks each one)
        options = TrainOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainOptions)
                                  if hasattr(args, f.name)})
    except UserError as exc:
        raise UserError(_as_flag(str(exc))) from None
    if preset.dataset == "celeba" and not args.data_cache:
        raise UserError("the preset trains on CelebA: pass --data-cache FILE made by "
                        "`python -m jfb_core prepare --data /path/to/celeba`")
    device = check_device(args.device or ("cuda" if preset.device == "cuda" else "cpu"))
    ift_possible = options.grad_mode == "ift" or args.command == "paper-run"
    if preset.data_step == "proximal" and ift_possible and options.backward_solver == "cg_normal":
        raise UserError("--backward-solver cg_normal needs second derivatives through the proximal step's inner "
                        "solve, which it does not have: use --backward-solver fixed_point with --data-step proximal")
    if preset.lipschitz > 1:
        print(f"warning: --lipschitz {preset.lipschitz:g} > 1: f is then not a contraction, Theorem 3.1's "
              f"guarantee (a unique fixed point, Anderson's convergence) no longer holds", file=sys.stderr)
    return preset, options, device


def _cmd_paper_run(args: argparse.Namespace) -> int:
    if not args.data_cache:
        raise UserError("paper-run needs --data-cache FILE (from `python -m jfb_core prepare --encode webp ...`)")
    if not args.out:
        raise UserError("paper-run needs --out FOLDER for its runs, JSON and figures")
    check_writable(args.out, folder=True)
    preset, options, device = _train_setup(args)
    t0 = time.perf_counter()
    result = paper_run(preset, options, args.data_cache, args.out, args.budget, device=device, n_val=args.n_val,
                       n_test=args.n_test, tv_grid=number_list(args.tv_grid, "--tv-grid") if args.tv_grid else None,
                       progress=lambda m: print(f"[{time.perf_counter() - t0:7.1f} s] {m}", file=sys.stderr,
                                                flush=True))
    print(f"{'method':>11} {'PSNR (dB)':>10} {'SSIM':>7}   on {result['test_images_scored']} of "
          f"{result['test_images_in_split']} test images")
    for name, r in result["methods"].items():
        print(f"{name:>11} {r['psnr_mean']:10.2f} {r['ssim_mean']:7.3f}")
    print(f"wrote {args.out}/paper_run.json, loss_curves.png, psnr_vs_time.png ({result['wall_seconds']:.0f} s)")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm


    preset, options, device = _train_setup(args)
    out = str(check_writable(args.out or f"runs/{preset.name}_{options.grad_mode}", folder=True))
    rank = int(os.environ.get("RANK", "0"))
    bars: dict[str, tqdm] = {}

    def progress(p: dict) -> None:
        if rank != 0:
            return
        phase = p["phase"]
        if phase == "resume":
            within = f", {p['batch']} batches into epoch {p['epoch'] + 1}" if p.get("batch") else ""
            print(f"resuming after epoch {p['epoch']} ({p['steps']} steps done{within})", file=sys.stderr)
        elif phase in ("pretrain", "train"):
            key = f"{phase}{p['epoch']}"
            if key not in bars:
                for b in bars.values():
                    b.close()
                bars.clear()
                total = p["total"] if phase == "pretrain" else p["batches"]
                bars[key] = tqdm(total=total, desc=f"{phase} epoch {p['epoch']}", file=sys.stderr, mininterval=5)
            bar = bars[key]
            bar.update((p["done"] if phase == "pretrain" else p["batch"]) - bar.n)
            post = {"loss": f"{p['loss']:.2e}"}
            if p.get("iterations") is not None:
                post["its"] = f"{p['iterations']:.1f}"
            if p.get("backward_iterations"):
                post["bwd"] = p["backward_iterations"]
            bar.set_postfix(post)
        elif phase == "epoch":
            for b in bars.values():
                b.close()
            bars.clear()
            its = "" if p["test_iterations"] is None else f", solver iterations {p['test_iterations']:.1f}"
            print(f"epoch {p['epoch']}: train loss {p['train_loss']:.3e}, test loss {p['test_loss']:.3e}, "
                  f"test PSNR {p['test_psnr']:.2f} dB{its}, eta {p['eta']:.3f}, rho {p['rho']:.4f}, "
                  f"{p['train_seconds']:.0f} s training", file=sys.stderr, flush=True)

    try:
        result = train(preset, options, out, device=device, resume=args.resume, progress=progress)
    except TrainingDiverged as exc:
        print(f"error: training stopped: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt as exc:
        print(f"{exc or 'interrupted'}", file=sys.stderr)
        return 130
    finally:
        for b in bars.values():
            b.close()
    if rank == 0:
        what = ("nothing to do: the run already holds its epochs (raise --epochs or --max-steps to continue)"
                if result.stopped == "already complete" else result.stopped)
        print(f"{what}: {len(result.log)} epoch(s) logged; checkpoint {result.checkpoint}, log {out}/log.json")
    return 0


def torch_device_kind(device: str) -> str:
    return "gpu" if device.startswith("cuda") else "cpu"


def _add_solver_arguments(tr: argparse.ArgumentParser) -> None:
    """The forward solver and the backward's options (their defaults are the strategies' own)."""
    tr.add_argument("--neumann-k", type=int, default=Neumann.k)
    tr.add_argument("--unroll-k", type=int, default=Unrolled.k)
    tr.add_argument("--backward-tol", type=float, default=IFT.tol)
    tr.add_argument("--backward-max-iter", type=int, default=IFT.max_iter)
    tr.add_argument("--backward-solver", choices=IFT_SOLVERS, default=IFT.solver,
                    help="IFT's adjoint solver: fixed_point or anderson (the forward solvers on w = g + J^T w) "
                         "or cg_normal (CG on the normal equations, the paper's route)")
    tr.add_argument("--forward-solver", choices=tuple(FORWARD_SOLVERS), default=DEFAULT_FORWARD_SOLVER,
                    help="the forward fixed-point solver: anderson (Anderson acceleration, the default) or "
                         "fixed_point (plain iteration)")


def _add_train_arguments(tr: argparse.ArgumentParser) -> None:
    tr.add_argument("--grad-mode", choices=GRAD_MODES, default="jfb")
    tr.add_argument("--data-cache", default=None, help="cache file from `prepare` (default: the bundled images)")
    tr.add_argument("--out", default=None, help="run folder for checkpoint.pt and log.json (default runs/PRESET_MODE)")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    tr.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                    help="warm start: begin from this run's weights (same network; any image size or blur); "
                         "with pretraining, its denoiser is fine-tuned first; recorded in the run's log")
    tr.add_argument("--device", default=None, help="cpu or cuda (default: the preset's)")
    tr.add_argument("--size", type=_positive_int, default=None, help="image side (default: the preset's)")
    field_types = {f.name: f.type for f in dataclasses.fields(Preset)}  # "int", "float", "str"
    for name in TRAIN_OVERRIDES:  # one flag per overridable Preset field, typed as the field
        kind = {"int": int, "float": float, "str": str}[field_types[name]]
        tr.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=f"override the preset's {name}",
                        **({"choices": sorted(BLURS)} if name == "blur" else {}))
    tr.add_argument("--data-step", choices=DATA_STEPS, default=None,
                    help="DE-GRAD's explicit data step (eq. 3.5) or the exact (proximal) one of chapter 6; "
                         "default: the preset's")
    tr.add_argument("--activation", choices=ACTIVATIONS, default=None,
                    help="the network's nonlinearity (default: the preset's, relu)")
    tr.add_argument("--arch", choices=ARCHS, default=None,
                    help="the network f: the paper's spectrally normalised DnCNN or convex potential layers "
                         "(chapter 6; default: the preset's, dncnn)")
    tr.add_argument("--skip", action=argparse.BooleanOptionalAction, default=None,
                    help="f = c + eps (alpha (x - c) + (1 - alpha) g(x - c)) with a 1-Lipschitz g (chapter 6)")
    _add_solver_arguments(tr)
    tr.add_argument("--n-eval", type=int, default=64,
                    help="test images scored after every epoch (with --data-cache: at most its test split; "
                         "else at most the preset's n_test)")
    tr.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps in all")
    tr.add_argument("--eval-every", type=int, default=0, help="also score the eval images every N steps")
    tr.add_argument("--checkpoint-every", type=int, default=0,
                    help="also checkpoint every N steps within an epoch, so an interrupted run "
                         "loses at most N steps on --resume (default: only at epoch ends)")
    tr.add_argument("--amp", action="store_true", help="bfloat16 autocast on a GPU")
    tr.add_argument("--channels-last", action="store_true",
                    help="run the convex-potential network on channels-last tensors (about 1.8x faster on a CPU "
                         "at 128 px; the same map up to float rounding)")
    tr.add_argument("--certify", action="store_true",
                    help="certified by construction: each spectral layer is normalised by the largest spectral "
                         "norm of its kernel over the tracked peak frequencies (Fourier domain, differentiable), "
                         "re-scanned over the whole spectrum at the preset's image size at the start, before "
                         "every evaluation and every checkpoint, where the stored norms become certified upper "
                         "bounds; the drift between scans is logged")
    tr.add_argument("--certify-margin", type=float, default=0.0,
                    help="store the certified norms this fraction above the bound (default 0)")
    tr.add_argument("--crop", type=int, default=None,
                    help="train on one random CROP x CROP patch of each training image (scored on whole images)")
    tr.add_argument("--eval-split", choices=EVAL_SPLITS, default="test",
                    help="images scored during training: test, or val (the last --n-eval images of the training "
                         "split, which --n-train must then leave out)")
    tr.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")


def _add_evaluate_arguments(ev: argparse.ArgumentParser) -> None:
    ev.add_argument("--data", default=None, help="CelebA folder holding img_align_celeba/ "
                    "(default: the preset's data set; the bundled images for 'fast')")
    ev.add_argument("--subset", choices=["paper", "official"], default="paper",
                    help="CelebA split: the paper's 10,000 images (8,000/2,000) or the official one")
    ev.add_argument("--split", default=None, help="CelebA split to score (default: test; the bundled images have only test)")
    ev.add_argument("--methods", default="direct,tikhonov,tv", help="comma-separated methods")
    ev.add_argument("--blur", choices=sorted(BLURS), default=None, help="blur setting (default: the preset's)")
    ev.add_argument("--padding", choices=PADDINGS, default=None)
    ev.add_argument("--size", type=int, default=None, help="image side (default: the preset's)")
    ev.add_argument("--n-val", type=_positive_int, default=200, help="validation images used to tune weights")
    ev.add_argument("--limit", type=_positive_int, default=None, help="score only the first N test images")
    ev.add_argument("--batch-size", type=_positive_int, default=100)
    ev.add_argument("--seed", type=int, default=0, help="noise seed (per image: seed and image number)")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--out", default=None, help="output JSON (default: runs/eval/...; `make reproduce` writes results/)")
    ev.add_argument("--checkpoint", action="append", default=None, metavar="[NAME=]PATH",
                    help="a trained DE-GRAD checkpoint to score as method NAME (repeatable; list NAME in --methods)")
    ev.add_argument("--pnp-strength", default="1",
                    help="comma-separated denoiser strengths a in (0, 1] for Plug-and-Play, D_a = I + a (D - I), "
                         "tuned on validation together with the step (default: 1, the plain denoiser)")
    ev.add_argument("--pnp-step", default="0.5,1,1.5,1.9",
                    help="comma-separated Plug-and-Play steps in (0, 2) to tune over (default: 0.5,1,1.5,1.9)")
    ev.add_argument("--pnp-max-iter", type=_positive_int, default=50,
                    help="Plug-and-Play iterations at most (--pnp-tol stops it earlier; default 50)")
    ev.add_argument("--pnp-tol", type=_positive_float, default=1e-4,
                    help="Plug-and-Play stops when every image's relative change is below this (default 1e-4)")
    ev.add_argument("--tv-grid", default=None, help="comma-separated TV weights to tune over (default: 5e-4..4e-3)")
    ev.add_argument("--tv-delta", default=None,
                    help="comma-separated smoothing parameters delta of TV to tune together with its weight "
                         "(default: delta = 0.01 fixed)")
    ev.add_argument("--tv-exact-grid", default=None,
                    help="comma-separated weights for tv_exact (FISTA, unsmoothed TV) to tune over "
                         "(default: 1e-4..4e-3)")
    ev.add_argument("--tv-exact-gap", type=_positive_float, default=None,
                    help="tv_exact runs each image until its duality gap is at most this fraction of its "
                         "objective (default 1e-3; at most 2,000 FISTA steps)")
    ev.add_argument("--grid", type=_nonnegative_int, default=0, help="also write a PNG grid of the first N test images")
    ev.add_argument("--solve-tol", type=_positive_float, default=None,
                    help="Anderson tolerance for the checkpoints' fixed points (default: the trained one)")
    ev.add_argument("--solve-max-iter", type=_positive_int, default=None,
                    help="Anderson iteration cap for the checkpoints (default: the trained one)")
    ev.add_argument("--certify", dest="certify", action="store_true",
                    help="(the default) score each checkpoint and the pnp denoiser with every layer's stored norm "
                         "raised to its certified upper bound at the test size, so that Lip(f) meets its target; "
                         "the certificate of the network as trained is recorded either way")
    ev.add_argument("--as-trained", dest="certify", action="store_false",
                    help="score the networks with their stored norm estimates as trained, which may lie below "
                         "the layers' true norms (then Lip(f) can exceed its target; the bound is recorded)")
    ev.set_defaults(certify=True)
    ev.add_argument("--float64", action="store_true",
                    help="solve the checkpoints' fixed points, and Plug-and-Play's, in float64 (float32 cannot "
                         "resolve a --solve-tol or --pnp-tol much below 1e-5); with --solve-tol the proximal "
                         "step's inner solve is 100x tighter")


def _add_prepare_arguments(pr: argparse.ArgumentParser) -> None:
    pr.add_argument("--data", required=True, help="CelebA folder holding img_align_celeba/")
    pr.add_argument("--out", default=None, help="cache file (default: runs/celeba_SUBSET_SIZE.pt)")
    pr.add_argument("--size", type=_positive_int, default=128, help="image side after resizing (default 128)")
    pr.add_argument("--subset", choices=["paper", "official"], default="paper",
                    help="the paper's 10,000 images (8,000/2,000) or the official split")
    pr.add_argument("--splits", default="train,test", help="comma-separated splits to store")
    pr.add_argument("--limit", type=_positive_int, default=None, help="keep the first N images of each split")
    pr.add_argument("--force", action="store_true", help="replace an existing cache file at --out")
    pr.add_argument("--encode", choices=["webp", "jpeg"], default=None,
                    help="store the images compressed (a compact cache to carry to a GPU machine; "
                         "10,000 images at 128 px: about 37 MB in WebP at quality 90)")
    pr.add_argument("--quality", type=_positive_int, default=90, help="quality of --encode, 1-100 (default 90)")


def _add_paper_run_arguments(pp: argparse.ArgumentParser) -> None:
    pp.add_argument("--budget", type=_positive_float, required=True,
                    help="seconds for the whole command: training JFB (40%%), then IFT (30%%), then scoring")
    pp.add_argument("--n-val", type=_positive_int, default=100, help="validation images that tune TV (default 100)")
    pp.add_argument("--n-test", type=_positive_int, default=None, help="score only the first N test images")
    pp.add_argument("--tv-grid", default=None, help="comma-separated TV weights to tune over")


def _add_step_arguments(bp: argparse.ArgumentParser) -> None:
    bp.add_argument("--run", default=None, metavar="CHECKPOINT",
                    help="profile the step of this run: its configuration and weights (default: the preset's "
                         "network, freshly initialised)")
    bp.add_argument("--crop", type=_positive_int, default=None, help="train on random crops of this side")
    bp.add_argument("--certify", action="store_true", help="certified normalisation, as train --certify")
    bp.add_argument("--data-cache", default=None, help="a cache from `prepare` (default: the bundled images)")
    bp.add_argument("--thread-counts", default="1,2", help="comma-separated CPU thread counts (default 1,2)")
    bp.add_argument("--warmup", type=_nonnegative_int, default=1, help="untimed steps first (default 1)")
    bp.add_argument("--checkpoint-every", type=_positive_int, default=25,
                    help="steps between checkpoints, over which one checkpoint's cost is shared (default 25)")


def _step_setup(args: argparse.Namespace, preset):
    """The preset and options of the step to profile: a run's own (``--run``) or the preset's."""
    if args.run:
        cfg = read_checkpoint(args.run)["config"]
        preset, options = split_config(cfg)
        options = dataclasses.replace(options, init_from=args.run, data_cache=args.data_cache)
    else:
        options = TrainOptions(data_cache=args.data_cache)
    overrides = {k: v for k, v in (("image_size", args.size), ("batch_size", args.batch)) if v is not None}
    preset = preset.replace(**overrides) if overrides else preset
    options = dataclasses.replace(options, crop=args.crop, certify=args.certify or options.certify,
                                  channels_last=True)
    return preset, options


def _add_bench_subcommands(bench: argparse.ArgumentParser) -> None:
    be = bench.add_subparsers(dest="which", metavar="BENCHMARK")
    be.required = True
    bench_help = {"solvers": "plain iteration against Anderson acceleration (chapter 3)",
                  "memory": "bytes autograd keeps for backward, per backward mode (chapter 4)",
                  "backward": "time and peak memory of the backward modes against image size (chapter 5, Fig. 2)",
                  "step": "where the time of one training step goes (profile: solve, backward, data, norms, "
                          "checkpoint, convolutions)"}
    for name in BENCHMARKS:
        bp = be.add_parser(name, help=bench_help[name], description=bench_help[name])
        _add_preset(bp)
        bp.add_argument("--device", default=None, help="cpu or cuda (default: the preset's, cpu for 'fast')")
        bp.add_argument("--size", type=_positive_int, default=None, help="image side (default: the preset's largest)")
        bp.add_argument("--batch", type=_positive_int, default=None, help="batch size (default: the preset's)")
        bp.add_argument("--out", default=None,
                        help="output JSON (default: runs/bench/...; `make reproduce` writes results/bench/)")
        if name == "step":
            _add_step_arguments(bp)
        if name != "memory":
            bp.add_argument("--repeats", type=_positive_int, default=None,
                            help="timed repetitions (default: the preset's)")
        if name == "backward":
            bp.add_argument("--sizes", default=None, help="comma-separated image sides (default: the preset's)")
            bp.add_argument("--methods", default="jfb,ift_cg,ift_fp",
                            help="comma-separated methods among " + ", ".join(BACKWARD_METHODS))
            bp.add_argument("--forward-iters", type=_positive_int, default=20,
                            help="Anderson iterations of every forward solve (the same for all methods)")
            bp.add_argument("--backward-tol", type=_positive_float, default=IFT.tol,
                            help="relative tolerance of the adjoint solve")
            bp.add_argument("--backward-max-iter", type=_positive_int, default=IFT.max_iter,
                            help="iteration cap of the adjoint solve")
            bp.add_argument("--data", default=None, help="CelebA folder for the fixed batch (default: bundled images)")
            bp.add_argument("--warmup", type=_nonnegative_int, default=2,
                            help="untimed steps before the timed ones, per size and method (default 2)")
            bp.add_argument("--threads", type=_positive_int, default=None,
                            help="CPU threads for torch (default: torch's choice)")
        bp.set_defaults(func=_cmd_bench)


def _add_reproduce_arguments(rp: argparse.ArgumentParser) -> None:
    rp.add_argument("names", nargs="*", metavar="NAME", help="experiments to run in order ('all': every one)")
    rp.add_argument("--list", action="store_true", help="list the experiments and exit")
    rp.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    rp.add_argument("--data", default=None, help="CelebA folder holding img_align_celeba/")
    rp.add_argument("--runs", default="runs",
                    help="folder for runs and data caches (default runs/; keep it outside the checkout)")
    rp.add_argument("--threads", type=_positive_int, default=1, help="CPU threads of the 128-px runs (default 1)")


def _cmd_reproduce(args: argparse.Namespace) -> int:
    if args.list:
        print(experiments.listing())
        return 0
    if not args.names:
        raise UserError("name an experiment (or 'all'); `python -m jfb_core reproduce --list` shows them")
    ctx = experiments.Context(data=args.data, runs=args.runs, threads=args.threads)
    lines = experiments.reproduce(args.names, ctx, dry_run=args.dry_run)
    if args.dry_run:
        print("\n".join(lines))
    return 0


def build_parser() -> argparse.ArgumentParser:
    invoked = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    parser = argparse.ArgumentParser(
        prog="jfb" if invoked == "jfb" else "python -m jfb_core",
        description="Implicit networks for deblurring with Jacobian-free backpropagation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {"info": _cmd_info,
                                                                 "evaluate": _cmd_evaluate,
                                                                 "bench": _cmd_bench,
                                                                 "prepare": _cmd_prepare,
                                                                 "train": _cmd_train,
                                                                 "paper-run": _cmd_paper_run,
                                                                 "reproduce": _cmd_reproduce}
    subs = {}
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name not in ("bench", "reproduce"):  # each benchmark takes --preset itself; experiments fix theirs
            _add_preset(p)
        p.set_defaults(func=handlers[name])
        subs[name] = p
    _add_evaluate_arguments(subs["evaluate"])
    _add_prepare_arguments(subs["prepare"])
    for name in ("train", "paper-run"):
        _add_train_arguments(subs[name])
    subs["train"].add_argument("--max-seconds", type=float, default=None,
                               help="stop cleanly (checkpointed, resumable) once training has run this many "
                                    "seconds in all, resumed sessions included")
    _add_paper_run_arguments(subs["paper-run"])
    _add_reproduce_arguments(subs["reproduce"])
    _add_bench_subcommands(subs["bench"])
    return parser


# errors of the file system that the user can fix: read-only, full, over quota
_USER_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. A mistake the user can fix (:class:`jfb_core.errors.UserError`, or a
    file that cannot be read or written) prints one line and returns 2; Ctrl-C returns 130;
    anything else is a bug and keeps its traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    tune_allocator()
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if not isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
                                FileExistsError)) and exc.errno not in _USER_ERRNOS:
            raise  # an OSError the user cannot fix is a bug: keep its traceback
        name = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"error: cannot use{name}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"{exc or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
