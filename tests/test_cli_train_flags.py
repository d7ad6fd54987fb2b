"""Every flag of `train` must reach the configuration of the run: a flag that is parsed but
ignored fails here. Each flag is given a value other than its default, the command line is
set up exactly as `train` does it (`_train_setup`, no training), and the value must be found
in the preset or the training options that the run records in its checkpoint and log."""

import argparse
from dataclasses import asdict

import pytest

from jfb_core.cli import _train_setup, build_parser

# flags that do not configure the run itself: where it writes, whether it resumes, the process
NOT_CONFIG = {"help", "out", "resume", "threads", "device", "preset", "command"}
# flag -> the field that holds it, where the names differ
FIELD = {"size": "image_size"}
# a value for each flag, other than its default and valid together with the others' defaults
VALUES = {"grad_mode": "ift", "data_cache": "/tmp/some_cache.pt", "init_from": "/tmp/some_run.pt",
          "blur": "9x9_var5", "data_step": "proximal", "activation": "maxmin", "arch": "cpl",
          "backward_solver": "cg_normal", "forward_solver": "fixed_point", "crop": 32, "eval_split": "val", "certify_margin": 0.02}


def _train_actions():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"], [a for a in sub.choices["train"]._actions if a.dest not in NOT_CONFIG]


def _value(action):
    if action.dest in VALUES:
        return VALUES[action.dest]
    if isinstance(action, argparse.BooleanOptionalAction):
        return True
    if action.nargs == 0:  # store_true
        return True
    if action.type is float or action.dest in ("lr", "eta", "tol", "lipschitz", "rho"):
        return {"lr": 3e-4, "eta": 0.3, "tol": 2e-3, "lipschitz": 0.95, "rho": 0.3}.get(action.dest, 0.123)
    return 7  # whole-number flags


def _argv(action, value):
    flag = action.option_strings[0]
    if isinstance(action, argparse.BooleanOptionalAction) or action.nargs == 0:
        return [flag]
    return [flag, str(value)]


_, ACTIONS = _train_actions()


@pytest.mark.parametrize("action", ACTIONS, ids=[a.dest for a in ACTIONS])
def test_train_flag_reaches_the_run_configuration(action):
    parser = build_parser()
    value = _value(action)
    assert value != action.default, action.dest
    argv = ["train", *_argv(action, value)]
    if action.dest == "backward_solver":
        argv += ["--grad-mode", "ift"]
    args = parser.parse_args(argv)
    preset, options, _ = _train_setup(args)
    config = {**asdict(preset), **asdict(options)}
    field = FIELD.get(action.dest, action.dest)
    assert field in config, f"--{action.dest} is parsed but has no field in the run's configuration"
    assert config[field] == value, f"--{action.dest} {value!r} was parsed but the run uses {config[field]!r}"


def test_every_configuring_flag_is_checked():
    # the list above comes from the parser itself, so a new flag is tested without editing this file
    assert {"grad_mode", "lr", "rho", "data_step", "max_steps", "channels_last", "max_seconds"} <= \
        {a.dest for a in ACTIONS}
