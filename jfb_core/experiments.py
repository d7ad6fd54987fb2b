"""The experiments behind the committed results, as one table: ``python -m jfb_core reproduce NAME``.

Each :class:`Experiment` is a list of steps: commands of this package's command line
(``train``, ``evaluate``, ``bench``, ``prepare``), a pair of them run side by side, the
publication of a finished run into ``results/train`` (its log and a slim checkpoint), or
the continuation of a committed portable checkpoint on a new machine. Commands are written
with the placeholders ``{data}`` (the CelebA folder the user gives), ``{runs}`` (where runs
and caches live; keep it outside the checkout so that runs survive), ``{cache64}``,
``{cache128}`` and ``{threads}``. ``--list`` shows the table; ``--dry-run`` prints the
commands without running them. The Makefile's experiment targets call this module.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, Union

from jfb_core.errors import UserError
from jfb_core.train import slim_checkpoint


@dataclass(frozen=True)
class Cmd:
    """``python -m jfb_core ARGS`` (a string with placeholders, split like a shell would)."""

    args: str


@dataclass(frozen=True)
class Parallel:
    """Commands run side by side (one CPU thread each), waited for together."""

    cmds: tuple[Cmd, ...]


@dataclass(frozen=True)
class Publish:
    """Copy ``{runs}/RUN``'s log and a slim checkpoint into ``DEST`` (a folder of results/train).
    ``portable`` keeps the optimiser state and counters, so that another machine can continue."""

    run: str
    dest: str
    portable: bool = False


@dataclass(frozen=True)
class Continue:
    """Start ``{runs}/RUN`` from the committed portable checkpoint in ``SOURCE`` unless the run
    already has a checkpoint of its own."""

    source: str
    run: str


@dataclass(frozen=True)
class Cache:
    """Make ``{runs}/celeba_paper_SIZE.pt`` from ``{data}`` unless it exists."""

    size: int


Step = Union[Cmd, Parallel, Publish, Continue, Cache]


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    chapter: str
    steps: tuple[Step, ...]
    needs_data: bool = True


# ------------------------------------------------------------------ the flags shared by runs
EVAL64 = "evaluate --preset paper --data {data} --size 64 --blur 9x9_var5 --n-val 100"
EVALS1 = "evaluate --preset paper --data {data} --size 64 --blur 5x5_s1 --n-val 100"
EVAL128 = "evaluate --preset paper --data {data} --size 128 --blur 9x9_var5 --n-val 100 --device cpu"
EVAL128S1 = EVAL128.replace("9x9_var5", "5x5_s1")
EVAL128S5 = EVAL128.replace("9x9_var5", "5x5_s5")
TRAIN64_RHO1 = ("train --preset fast --size 64 --data-cache {cache64} --blur 9x9_var5 --n-train 8000 "
                "--pretrain-epochs 2 --epochs 2 --lr 1e-3 --n-eval 200 --eval-every 100")
TRAIN64 = ("train --preset fast --size 64 --data-cache {cache64} --blur 9x9_var5 --n-train 8000 --rho 0.02 "
           "--pretrain-epochs 1 --lr 1e-3 --n-eval 64 --eval-every 50 --threads 1")
TRAINPROX = ("train --preset fast --size 64 --data-cache {cache64} --blur 9x9_var5 --n-train 8000 --rho 0.05 "
             "--data-step proximal --skip --activation maxmin --lipschitz 0.99 --pretrain-epochs 1 --lr 3e-3 "
             "--n-eval 64 --eval-every 50 --threads 1")
TRAINCPL = ("train --preset fast --size 64 --data-cache {cache64} --blur 5x5_s1 --n-train 8000 --arch cpl --depth 6 "
            "--width 32 --rho 0.05 --data-step proximal --skip --lipschitz 0.99 --pretrain-epochs 1 --lr 1e-3 "
            "--n-eval 64 --threads 1")
TRAIN128 = ("train --preset fast --size 128 --data-cache {cache128} --n-train 8000 --arch cpl --depth 6 --width 32 "
            "--rho 0.05 --data-step proximal --skip --lipschitz 0.99 --pretrain-epochs 0 --lr 1e-3 --n-eval 64 "
            "--eval-every 50 --checkpoint-every 10 --channels-last --threads {threads} --resume")
TRAIN128C = ("train --preset fast --size 128 --data-cache {cache128} --n-train 7936 --eval-split val --n-eval 64 "
             "--arch cpl --depth 6 --width 32 --rho 0.05 --data-step proximal --skip --lipschitz 0.99 "
             "--pretrain-epochs 0 --lr 1e-3 --eval-every 100 --checkpoint-every 25 --channels-last "
             "--threads {threads} --crop 64 --certify --resume")
ABLATION = ("train --preset fast --size 64 --data-cache {cache64} --blur 5x5_s1 --n-train 7936 --eval-split val "
            "--n-eval 64 --depth 6 --width 32 --lipschitz 0.99 --pretrain-epochs 0 --lr 1e-3 --epochs 2 "
            "--max-steps 600 --eval-every 50 --checkpoint-every 25 --certify --threads 1 --seed 0 --grad-mode jfb "
            "--resume")
#: chapter 6's ablation: the plain network, then one ingredient at a time
ABLATION_VARIANTS = {
    "plain": "--arch dncnn --rho 1 --data-step gradient --no-skip",
    "rho": "--arch dncnn --rho 0.05 --data-step gradient --no-skip",
    "prox": "--arch dncnn --rho 0.05 --data-step proximal --no-skip",
    "skip": "--arch dncnn --rho 0.05 --data-step proximal --skip",
    "cpl": "--arch cpl --rho 0.05 --data-step proximal --skip",
}
TIGHT128 = "--limit 5 --solve-tol 1e-6 --solve-max-iter 400 --float64"
TVTUNE = "evaluate --preset paper --data {data} --n-val 100 --methods tv"
R64 = "results/train/celeba64_"
R128 = "results/train/celeba128_9x9_var5_cpl"
R128S1 = "results/train/celeba128_5x5_s1_cpl_jfb"
R128S5 = "results/train/celeba128_5x5_s5_cpl_jfb"
RC128 = "results/train/celeba128_9x9_var5_cpl_jfb_certified"
RABL = "results/train/celeba64_5x5_s1_ablation"
CKPTS64 = (f"--checkpoint degrad_jfb={R64}9x9_var5_jfb/checkpoint.pt "
           f"--checkpoint degrad_ift={R64}9x9_var5_ift/checkpoint.pt")
CKPTSPROX = CKPTS64.replace("_jfb/", "_prox_jfb/").replace("_ift/", "_prox_ift/")
CKPTSCPL = (f"--checkpoint degrad_jfb={R64}5x5_s1_cpl_jfb/checkpoint.pt "
            f"--checkpoint degrad_ift={R64}5x5_s1_cpl_ift/checkpoint.pt")
RUNS64 = ("9x9_var5_rho1_jfb", "9x9_var5_jfb", "9x9_var5_ift", "9x9_var5_prox_jfb", "9x9_var5_prox_ift",
          "5x5_s1_cpl_jfb", "5x5_s1_cpl_ift")
ABL_CKPTS = " ".join(f"--checkpoint {v}={RABL}_{v}/checkpoint.pt" for v in ABLATION_VARIANTS)
ABL_EVAL = f"{EVALS1} --device cpu --methods {','.join(ABLATION_VARIANTS)} {ABL_CKPTS}"


OUT = "--out results/baselines/celeba-paper-test_"
_TABLE: tuple[Experiment, ...] = (
    Experiment("baselines", "direct inverse, Tikhonov and TV at the three blurs (128 px) and at 64 px", "2, 7", (
        *(Cmd(f"evaluate --preset paper --data {{data}} --blur {b} --n-val 100 {OUT}{b}_zeros.json")
          for b in ("5x5_s1", "9x9_var5", "5x5_s5")),
        Cmd(f"{EVAL64} --methods direct,tv --tv-grid 1.25e-4,2.5e-4,5e-4,1e-3 {OUT}9x9_var5_zeros_64px.json"),
        Cmd(f"{EVALS1} --methods direct,tv --tv-grid 5e-4,1e-3,2e-3,4e-3 {OUT}5x5_s1_zeros_64px.json"))),
    Experiment("bench", "the solver, memory and backward benchmarks of the fast preset", "3, 5", (
        Cmd("bench solvers --out results/bench/solvers_fast_cpu.json"),
        Cmd("bench memory --out results/bench/memory_fast_cpu.json"),
        Cmd("bench backward --methods jfb,ift_cg,ift_fp,ift_aa,neumann --repeats 15 "
            "--out results/bench/backward_fast_cpu.json")), needs_data=False),
    Experiment("bench-paper", "backward timings of the paper preset on CelebA, 16 to 128 px", "5", (
        Cmd("bench backward --preset paper --device cpu --sizes 16,32,64,96,128 --batch 16 --repeats 3 "
            "--warmup 1 --threads 1 --data {data} --out results/bench/backward_paper_cpu.json"),
        Cmd("bench backward --preset paper --device cpu --sizes 16,32,64,96,128 --batch 16 --repeats 3 "
            "--warmup 1 --threads 1 --data {data} --methods jfb,ift_aa "
            "--out results/bench/backward_paper_cpu_aa.json"))),
    Experiment("train64", "the 64-px training runs of chapters 6-7 (JFB and IFT side by side), published", "6, 7", (
        Cache(64),
        Cmd(f"{TRAIN64_RHO1} --grad-mode jfb --out {{runs}}/celeba64_9x9_var5_rho1_jfb"),
        Parallel((Cmd(f"{TRAIN64} --epochs 3 --grad-mode jfb --out {{runs}}/celeba64_9x9_var5_jfb"),
                  Cmd(f"{TRAIN64} --epochs 4 --grad-mode ift --max-steps 600 --backward-max-iter 50 "
                      "--out {runs}/celeba64_9x9_var5_ift"))),
        Parallel((Cmd(f"{TRAINPROX} --epochs 3 --grad-mode jfb --out {{runs}}/celeba64_9x9_var5_prox_jfb"),
                  Cmd(f"{TRAINPROX} --epochs 1 --max-steps 250 --grad-mode ift --backward-max-iter 50 "
                      "--out {runs}/celeba64_9x9_var5_prox_ift"))),
        Parallel((Cmd(f"{TRAINCPL} --epochs 3 --max-steps 1400 --eval-every 50 --checkpoint-every 100 "
                      "--grad-mode jfb --out {runs}/celeba64_5x5_s1_cpl_jfb"),
                  Cmd(f"{TRAINCPL} --epochs 1 --max-steps 200 --eval-every 25 --checkpoint-every 25 "
                      "--grad-mode ift --backward-max-iter 50 --out {runs}/celeba64_5x5_s1_cpl_ift"))),
        *(Publish(f"celeba64_{r}", f"{R64}{r}") for r in RUNS64))),
    Experiment("eval64", "the 64-px networks scored: chapter 7's rows, solved fixed points, Table 1 grids, PnP",
               "6, 7", (
        Cmd(f"{EVAL64} --as-trained --methods pnp,degrad_ift,degrad_jfb {CKPTS64} "
            "--out results/eval/celeba-paper-test_64px_9x9_var5.json"),
        Cmd(f"{EVAL64} --as-trained --methods degrad_ift,degrad_jfb {CKPTS64} --limit 50 --solve-tol 1e-5 "
            "--solve-max-iter 400 --out results/eval/celeba-paper-test_64px_9x9_var5_tight.json"),
        Cmd(f"{EVAL64} --as-trained --methods degrad_ift,degrad_jfb {CKPTSPROX} "
            "--out results/eval/celeba-paper-test_64px_9x9_var5_prox.json"),
        Cmd(f"{EVAL64} --as-trained --methods degrad_ift,degrad_jfb {CKPTSPROX} --limit 50 --solve-tol 1e-5 "
            "--solve-max-iter 400 --out results/eval/celeba-paper-test_64px_9x9_var5_prox_tight.json"),
        Cmd(f"{EVAL64} --as-trained --methods direct,tv,pnp,degrad_ift,degrad_jfb {CKPTSPROX} "
            "--tv-grid 1.25e-4,2.5e-4,5e-4,1e-3 --limit 6 --grid 6 "
            "--out results/eval/celeba-paper-test_64px_9x9_var5_prox_table1.json"),
        Cmd(f"{EVALS1} --as-trained --methods degrad_ift,degrad_jfb {CKPTSCPL} "
            "--out results/eval/celeba-paper-test_64px_5x5_s1_cpl.json"),
        Cmd(f"{EVALS1} --as-trained --methods degrad_ift,degrad_jfb {CKPTSCPL} --limit 50 --solve-tol 1e-6 "
            "--solve-max-iter 400 --float64 --out results/eval/celeba-paper-test_64px_5x5_s1_cpl_tight.json"),
        Cmd(f"{EVALS1} --as-trained --methods direct,tv,pnp,degrad_ift,degrad_jfb {CKPTSCPL} "
            "--tv-grid 5e-4,1e-3,2e-3,4e-3 --pnp-strength 0.2 --pnp-max-iter 100 --limit 6 --grid 6 "
            "--out results/eval/celeba-paper-test_64px_5x5_s1_cpl_table1.json"),
        Cmd(f"{EVALS1} --as-trained --methods pnp --pnp-strength 0.05,0.1,0.2,0.4,1 --pnp-max-iter 100 "
            f"--checkpoint degrad_jfb={R64}5x5_s1_cpl_jfb/checkpoint.pt "
            "--out results/eval/celeba-paper-test_64px_5x5_s1_cpl_pnp.json"),
        Cmd(f"{EVALS1} --as-trained --methods pnp --pnp-step 1.9 --pnp-strength 0.2 --pnp-tol 1e-6 "
            f"--pnp-max-iter 2000 --float64 --limit 50 --checkpoint degrad_jfb={R64}5x5_s1_cpl_jfb/checkpoint.pt "
            "--out results/eval/celeba-paper-test_64px_5x5_s1_cpl_pnp_tight.json"))),
    Experiment("train128", "JFB at 128 px, Table 2's blur, 200 steps warm-started from the 64-px run", "7", (
        Cache(128),
        Cmd(f"{TRAIN128} --init-from {R64}5x5_s1_cpl_jfb/checkpoint.pt --blur 9x9_var5 --epochs 1 "
            "--max-steps 200 --grad-mode jfb --out {runs}/celeba128_9x9_var5_cpl_jfb"))),
    Experiment("train128-ift", "IFT beside it, stopped by a 70-minute training budget", "7", (
        Cache(128),
        Cmd(f"{TRAIN128} --init-from {R64}5x5_s1_cpl_ift/checkpoint.pt --blur 9x9_var5 --epochs 1 "
            "--max-steps 300 --max-seconds 4200 --grad-mode ift --out {runs}/celeba128_9x9_var5_cpl_ift"))),
    *(Experiment(f"train128-s{s}", f"JFB at 128 px with the 5x5 sigma-{s} blur, the same recipe", "7", (
        Cache(128),
        Cmd(f"{TRAIN128} --init-from {R64}5x5_s1_cpl_jfb/checkpoint.pt --blur 5x5_s{s} --epochs 1 "
            f"--max-steps 200 --grad-mode jfb --out {{runs}}/celeba128_5x5_s{s}_cpl_jfb"))) for s in (1, 5)),
    Experiment("publish128", "the two 128-px runs at Table 2's blur into results/train", "7", (
        Publish("celeba128_9x9_var5_cpl_jfb", f"{R128}_jfb"),
        Publish("celeba128_9x9_var5_cpl_ift", f"{R128}_ift")), needs_data=False),
    Experiment("eval128", "the 128-px JFB and IFT networks scored, and Table 1's grid", "6, 7", (
        Cmd(f"{EVAL128} --as-trained --methods degrad_jfb --checkpoint degrad_jfb={R128}_jfb/checkpoint.pt "
            "--out results/eval/celeba-paper-test_128px_9x9_var5_cpl_jfb.json"),
        Cmd(f"{EVAL128} --as-trained --methods degrad_ift --checkpoint degrad_ift={R128}_ift/checkpoint.pt "
            "--limit 500 --out results/eval/celeba-paper-test_128px_9x9_var5_cpl_ift.json"),
        Cmd(f"{EVAL128} --as-trained --methods direct,tv,degrad_jfb --checkpoint degrad_jfb={R128}_jfb/checkpoint.pt "
            "--tv-grid 5e-4 --limit 6 --grid 6 --out results/eval/celeba-paper-test_128px_9x9_var5_cpl_table1.json"))),
    Experiment("eval128-s1", "the 5x5 sigma-1 run published and scored, and its Table 1 grid", "6, 7", (
        Publish("celeba128_5x5_s1_cpl_jfb", R128S1),
        Cmd(f"{EVAL128S1} --as-trained --methods degrad_jfb --checkpoint degrad_jfb={R128S1}/checkpoint.pt "
            "--limit 500 --out results/eval/celeba-paper-test_128px_5x5_s1_cpl_jfb.json"),
        Cmd(f"{EVAL128S1} --as-trained --methods direct,tv,degrad_jfb --checkpoint degrad_jfb={R128S1}/checkpoint.pt "
            "--tv-grid 2e-3 --limit 6 --grid 6 --out results/eval/celeba-paper-test_128px_5x5_s1_cpl_table1.json"))),
    Experiment("eval128-s5", "the 5x5 sigma-5 run published and scored", "7", (
        Publish("celeba128_5x5_s5_cpl_jfb", R128S5),
        Cmd(f"{EVAL128S5} --as-trained --methods degrad_jfb --checkpoint degrad_jfb={R128S5}/checkpoint.pt "
            "--limit 500 --out results/eval/celeba-paper-test_128px_5x5_s5_cpl_jfb.json"),
        Cmd(f"{EVAL128S5} --as-trained --methods degrad_jfb --checkpoint degrad_jfb={R128S5}/checkpoint.pt "
            f"{TIGHT128} --out results/eval/celeba-paper-test_128px_5x5_s5_cpl_tight.json"))),
    Experiment("tight128", "the 128-px networks at solved fixed points (float64) on 5 test images", "7", (
        Cmd(f"{EVAL128} --as-trained --methods degrad_jfb,degrad_ift --checkpoint degrad_jfb={R128}_jfb/checkpoint.pt "
            f"--checkpoint degrad_ift={R128}_ift/checkpoint.pt {TIGHT128} "
            "--out results/eval/celeba-paper-test_128px_9x9_var5_cpl_tight.json"),
        Cmd(f"{EVAL128S1} --as-trained --methods degrad_jfb --checkpoint degrad_jfb={R128S1}/checkpoint.pt "
            f"{TIGHT128} --out results/eval/celeba-paper-test_128px_5x5_s1_cpl_tight.json"))),
    Experiment("tv128", "the strongest smoothed TV: weight and delta tuned on validation, every setting", "2, 6, 7", (
        Cmd(f"{TVTUNE} --blur 9x9_var5 --tv-grid 2.5e-4,5e-4,1e-3,2e-3,4e-3 --tv-delta 0.01,0.02,0.05,0.1 "
            f"{OUT}9x9_var5_tv-tuned.json"),
        Cmd(f"{TVTUNE} --blur 5x5_s1 --tv-grid 5e-4,1e-3,2e-3,4e-3,8e-3 --tv-delta 0.02,0.05,0.1,0.2 "
            f"--limit 500 {OUT}5x5_s1_tv-tuned.json"),
        Cmd(f"{TVTUNE} --blur 5x5_s5 --tv-grid 5e-4,1e-3,2e-3,4e-3,8e-3 --tv-delta 0.02,0.05,0.1 "
            f"--limit 500 {OUT}5x5_s5_tv-tuned.json"),
        Cmd(f"{TVTUNE} --blur 5x5_s1 --size 64 --tv-grid 5e-4,1e-3,2e-3,4e-3 --tv-delta 0.02,0.05,0.1,0.2 "
            f"{OUT}5x5_s1_tv-tuned_64px.json"))),
    Experiment("tv-exact", "the exact TV by FISTA to a duality gap of 1e-3 of the objective, setting B", "2", (
        Cmd(f"{EVALS1} --methods tv_exact --tv-exact-grid 1e-3,1.5e-3,2e-3,3e-3,4e-3 "
            f"{OUT}5x5_s1_tv-exact_64px.json"),)),
    Experiment("pnp128", "Plug-and-Play at 128 px with the pretrained CPLNet denoiser", "7", (
        Cmd("evaluate --preset paper --data {data} --size 128 --blur 9x9_var5 --n-val 16 --device cpu "
            "--methods pnp --pnp-step 1.9 --pnp-strength 0.2,0.4 --pnp-max-iter 100 --limit 100 "
            f"--checkpoint degrad_jfb={R128}_jfb/checkpoint.pt "
            "--out results/eval/celeba-paper-test_128px_9x9_var5_pnp.json"),)),
    Experiment("ablation64", "chapter 6's designed ablation: five certified variants, trained and scored", "6", (
        Cache(64),
        *(step for v, flags in ABLATION_VARIANTS.items()
          for step in (Cmd(f"{ABLATION} {flags} --out {{runs}}/ablation64_{v}"),
                       Publish(f"ablation64_{v}", f"{RABL}_{v}"))),
        Cmd(f"{ABL_EVAL} --solve-tol 1e-5 --solve-max-iter 400 "
            "--out results/eval/celeba-paper-test_64px_5x5_s1_ablation.json"),
        Cmd(f"{ABL_EVAL} --limit 200 --out results/eval/celeba-paper-test_64px_5x5_s1_ablation_trained-tol.json"))),
    Experiment("train128-certified", "the certified 128-px JFB run on 64-px crops, 8 epochs (resumes)", "6", (
        Cache(128),
        Continue(RC128, "c128_certified_jfb"),
        Cmd(f"{TRAIN128C} --blur 9x9_var5 --epochs 8 --grad-mode jfb --init-from {R128}_jfb/checkpoint.pt "
            "--out {runs}/c128_certified_jfb"))),
    Experiment("train128-certified-ift", "the IFT twin of the certified 128-px run (Anderson on the adjoint), "
               "stopped after the JFB run's training time (resumes)", "6", (
        Cache(128),
        Cmd(f"{TRAIN128C} --blur 9x9_var5 --epochs 8 --grad-mode ift --backward-solver anderson --max-seconds 9263 "
            f"--init-from {R128}_ift/checkpoint.pt --out {{runs}}/c128_certified_ift"))),
    Experiment("train128-wide", "a wider certified network (8 layers of 48 channels) from scratch on 64-px crops, "
               "for the width comparison at equal wall-clock (resumes)", "6", (
        Cache(128),
        Cmd(TRAIN128C.replace("--depth 6 --width 32", "--depth 8 --width 48")
            + " --blur 9x9_var5 --epochs 8 --grad-mode jfb --out {runs}/c128_wide_jfb"))),
    Experiment("publish128-certified", "the certified run's portable checkpoint and log into results/train", "6", (
        Publish("c128_certified_jfb", RC128, portable=True),), needs_data=False),
    Experiment("profile128", "where the time of the certified 128-px training step goes (1 and 2 threads)", "6", (
        Cache(128),
        Cmd(f"bench step --run {R128}_jfb/checkpoint.pt --crop 64 --certify --data-cache {{cache128}} "
            "--thread-counts 1,2 --repeats 3 --out results/bench/step_profile_128px_cpu.json"))),
)


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in _TABLE}
#: what ``reproduce all`` runs, in order (the continuing certified run and the profile are separate)
ALL = ("baselines", "bench", "bench-paper", "train64", "eval64", "train128", "train128-ift", "publish128", "eval128",
       "train128-s1", "eval128-s1", "train128-s5", "eval128-s5", "tight128", "tv128", "tv-exact", "pnp128",
       "ablation64")


@dataclass
class Context:
    """The values of the placeholders."""

    data: str | None = None
    runs: str = "runs"
    threads: int = 1
    fields: dict = field(init=False)

    def __post_init__(self) -> None:
        self.fields = {"data": self.data or "", "runs": self.runs, "threads": str(self.threads),
                       "cache64": f"{self.runs}/celeba_paper_64.pt", "cache128": f"{self.runs}/celeba_paper_128.pt"}

    def argv(self, cmd: Cmd) -> list[str]:
        return [part.format(**self.fields) for part in shlex.split(cmd.args)]


def experiment(name: str) -> Experiment:
    """The experiment called ``name`` (a clear error that lists them otherwise)."""
    if name not in EXPERIMENTS:
        raise UserError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)} or 'all' "
                        f"(`python -m jfb_core reproduce --list` describes them)")
    return EXPERIMENTS[name]


def listing() -> str:
    """One line per experiment: name, chapters, whether it needs CelebA, what it makes."""
    width = max(map(len, EXPERIMENTS))
    return "\n".join(f"{e.name:<{width}}  ch. {e.chapter:<8} {'' if e.needs_data else '(no data) '}{e.description}"
                     for e in EXPERIMENTS.values())


def describe(step: Step, ctx: Context) -> list[str]:
    """The shell lines a step amounts to (what ``--dry-run`` prints)."""
    jfb = "python -m jfb_core "
    if isinstance(step, Cmd):
        return [jfb + shlex.join(ctx.argv(step))]
    if isinstance(step, Parallel):
        return [jfb + shlex.join(ctx.argv(c)) + " &" for c in step.cmds] + ["wait"]
    if isinstance(step, Publish):
        kind = "portable" if step.portable else "slim"
        return [f"# publish {ctx.runs}/{step.run} -> {step.dest} (log.json, {kind} checkpoint)"]
    if isinstance(step, Continue):
        return [f"# continue {step.source}/checkpoint.pt in {ctx.runs}/{step.run} unless it has a checkpoint"]
    return [f"# cache {ctx.fields['cache' + str(step.size)]} from {ctx.data} unless it exists"]


def publish(run: Path, dest: Path, portable: bool = False) -> None:
    """Copy a run's log and its slim (or portable) checkpoint into ``dest``."""
    for name in ("log.json", "checkpoint.pt"):
        if not (run / name).is_file():
            raise UserError(f"{run} has no {name}: train the run first")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / "log.json", dest / "log.json")
    slim_checkpoint(run / "checkpoint.pt", dest / "checkpoint.pt", keep_power_vectors=False, keep_optimizer=portable)


def run_step(step: Step, ctx: Context, launch: Callable[[Sequence[list[str]]], int]) -> None:
    """Run one step; ``launch`` runs argv lists of ``python -m jfb_core`` side by side and returns
    the first non-zero exit status (0 when all succeeded)."""
    if isinstance(step, (Cmd, Parallel)):
        cmds = step.cmds if isinstance(step, Parallel) else (step,)
        status = launch([ctx.argv(c) for c in cmds])
        if status:
            raise UserError(f"a step failed with exit status {status}: {describe(step, ctx)[0]}")
    elif isinstance(step, Publish):
        publish(Path(ctx.runs) / step.run, Path(step.dest), step.portable)
    elif isinstance(step, Continue):
        target = Path(ctx.runs) / step.run / "checkpoint.pt"
        source = Path(step.source) / "checkpoint.pt"
        if not target.exists() and source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            print(f"continuing the committed portable checkpoint {source}", file=sys.stderr)
    elif not Path(ctx.fields[f"cache{step.size}"]).exists():
        run_step(Cmd(f"prepare --data {{data}} --size {step.size} --out {{cache{step.size}}}"), ctx, launch)


def launch_processes(argvs: Sequence[list[str]]) -> int:
    """Start each ``python -m jfb_core ARGV`` as its own process and wait for all of them."""
    procs = [subprocess.Popen([sys.executable, "-m", "jfb_core", *argv]) for argv in argvs]
    codes = [p.wait() for p in procs]
    return next((c for c in codes if c), 0)


def reproduce(names: Sequence[str], ctx: Context, dry_run: bool = False,
              launch: Callable[[Sequence[list[str]]], int] = launch_processes) -> list[str]:
    """Run (or with ``dry_run`` only describe) the named experiments in order; returns the
    lines describing every step. ``all`` stands for :data:`ALL`."""
    chosen = [experiment(n) for name in names for n in (ALL if name == "all" else (name,))]
    missing = [e.name for e in chosen if e.needs_data] if not ctx.data else []
    if missing and not dry_run:
        raise UserError(f"{', '.join(missing)} need(s) the CelebA images: pass --data /path/to/celeba")
    lines: list[str] = []
    for e in chosen:
        lines.append(f"## {e.name}: {e.description}")
        for step in e.steps:
            lines += describe(step, ctx)
            if not dry_run:
                print("\n".join(describe(step, ctx)), file=sys.stderr, flush=True)
                run_step(step, ctx, launch)
    return lines


__all__ = ["ALL", "Cache", "Cmd", "Context", "Continue", "EXPERIMENTS", "Experiment", "Parallel", "Publish",
           "describe", "experiment", "listing", "publish", "reproduce"]
