"""Typed configuration: presets chosen by one environment variable.

A *preset* fixes the problem size everywhere (chapters, command line, benchmarks):

``fast``
    Textbook scale for 2 CPU cores: small crops of the bundled offline images, a
    small network, every chapter in a few minutes. The default.
``paper``
    The paper's set-up for a GPU: CelebA at 128x128 RGB, a 17-layer 64-channel
    network, batch 16, Anderson with m = 5, tolerance 1e-3, at most 50 iterations.

The preset is chosen with the environment variable ``JFB_PRESET`` (or passed by
name). Configuration is data: unknown keys and unknown preset names raise errors
that list what is allowed.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Mapping

from jfb_core.errors import UserError
from jfb_core.operators import BLURS, PADDINGS, BlurSetting, GaussianBlur, blur_from_setting

ENV_VAR = "JFB_PRESET"
DEFAULT_PRESET = "fast"

# The choices every layer checks against (and the command line offers), defined once here,
# at the bottom of the import graph: the modules that implement them import these.
ARCHS = ("dncnn", "cpl")  #: f_Theta: the paper's DnCNN or convex potential layers (models)
ACTIVATIONS = ("relu", "maxmin")  #: the DnCNN's activation (models)
BATCHNORM_MODES = ("none", "paper")  #: the DnCNN without or with the paper's batch normalisation
DATA_STEPS = ("gradient", "proximal")  #: DE-GRAD's data step: eq. (3.5)'s gradient or the exact proximal
GRAD_MODES = ("jfb", "ift", "neumann", "unrolled")  #: the backward passes (gradients)
# The blur's own settings (PADDINGS, BlurSetting, BLURS) are defined with the blur in operators
# and re-exported here, so that every choice can still be imported from this module.


@dataclass(frozen=True)
class Preset:
    """Every size and hyper-parameter that depends on the scale of a run.

    Images are in [0, 1]; ``noise_std`` is the standard deviation of the
    Gaussian noise on that range (0.01 in the paper, i.e. 0.02 on [-1, 1]).
    """

    name: str
    description: str
    # data
    dataset: str  # "bundled" (offline images shipped with installed packages) or "celeba"
    image_size: int
    channels: int
    n_train: int
    n_val: int
    n_test: int
    blur: str
    noise_std: float
    padding: str
    # network S_Theta (DnCNN-style) and the DE-GRAD map
    depth: int
    width: int
    lipschitz: float
    eta: float
    # fixed-point solver
    anderson_m: int
    tol: float
    max_iter: int
    # training
    batch_size: int
    epochs: int
    pretrain_epochs: int
    lr: float
    # benchmarks: square image sizes, batch and repetitions
    bench_sizes: tuple[int, ...]
    bench_batch: int
    bench_repeats: int
    seed: int = 0
    device: str = "cpu"
    # initial weight of the regulariser, S = rho (I - f); 1 means S = I - f, nothing learned
    rho: float = 1.0
    # "gradient": DE-GRAD's explicit step on the data term (eq. 3.5); "proximal": an exact step
    # on it, (A^T A + rho I)^{-1} (A^T d + rho f(z)), same fixed points, better conditioned
    data_step: str = "gradient"
    # f as c + eps (alpha (x - c) + (1 - alpha) g(x - c)) with 1-Lipschitz g (DnCNN(skip=True))
    skip: bool = False
    # the network's nonlinearity: "relu" (the paper's) or "maxmin" (pairs sorted, norm-preserving)
    activation: str = "relu"
    # the network f: "dncnn" (the paper's, spectrally normalised) or "cpl" (convex potential layers)
    arch: str = "dncnn"

    def __post_init__(self) -> None:
        if self.dataset not in ("bundled", "celeba"):
            raise UserError(f"dataset must be 'bundled' or 'celeba', got {self.dataset!r}")
        if self.blur not in BLURS:
            raise UserError(f"unknown blur {self.blur!r}; choose one of {sorted(BLURS)}")
        if self.padding not in PADDINGS:
            raise UserError(f"padding must be one of {PADDINGS}, got {self.padding!r}")
        for name in ("image_size", "channels", "depth", "width", "anderson_m", "max_iter",
                     "batch_size", "bench_batch", "bench_repeats"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("n_train", "n_val", "n_test", "epochs", "pretrain_epochs"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (self.noise_std >= 0 and self.tol > 0 and self.lr > 0 and self.eta > 0):
            raise UserError("noise_std must be >= 0 and tol, lr, eta must be > 0")
        if not 0 < self.lipschitz:
            raise UserError(f"lipschitz must be positive, got {self.lipschitz}")
        if not 0 < self.rho <= 1:
            raise UserError(f"rho must be in (0, 1], got {self.rho}")
        if self.data_step not in DATA_STEPS:
            raise UserError(f"data_step must be one of {DATA_STEPS}, got {self.data_step!r}")
        if self.activation not in ACTIVATIONS:
            raise UserError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.arch not in ARCHS:
            raise UserError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.arch == "cpl" and self.activation != "relu":
            raise UserError("arch 'cpl' needs activation 'relu' (its layers need a monotone activation)")
        if not isinstance(self.skip, bool):
            raise UserError(f"skip must be True or False, got {self.skip!r}")

    @property
    def blur_setting(self) -> BlurSetting:
        return BLURS[self.blur]

    def blur_operator(self, padding: str | None = None) -> GaussianBlur:
        """The forward operator ``A`` of this preset: its blur, channels and padding
        (``padding`` overrides the preset's)."""
        return blur_from_setting(self.blur, channels=self.channels, padding=padding or self.padding)

    def replace(self, **overrides: Any) -> "Preset":
        """A copy with some fields changed; unknown field names raise ``TypeError``."""
        check_keys(overrides, type(self))
        if "bench_sizes" in overrides:
            overrides["bench_sizes"] = tuple(int(s) for s in overrides["bench_sizes"])
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["bench_sizes"] = list(self.bench_sizes)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Preset":
        """Build from a mapping (e.g. a checkpoint's config); rejects unknown keys."""
        check_keys(data, cls)
        data = dict(data)
        if "bench_sizes" in data:
            data["bench_sizes"] = tuple(int(s) for s in data["bench_sizes"])
        return cls(**data)


def check_keys(data: Mapping[str, Any], cls: type) -> None:
    """Raise ``TypeError`` naming any key of ``data`` that is not a field of ``cls``."""
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise TypeError(
            f"unknown {cls.__name__} key(s) {unknown}; allowed keys are {sorted(allowed)}"
        )


_FAST = Preset(
    name="fast",
    description="textbook scale: 2 CPU cores, minutes, bundled offline images",
    dataset="bundled",
    image_size=32,
    channels=3,
    n_train=256,
    n_val=64,
    n_test=64,
    blur="5x5_s1",
    noise_std=0.01,
    padding="zeros",
    depth=5,
    width=32,
    lipschitz=0.9,
    eta=0.4,
    anderson_m=5,
    tol=1e-3,
    max_iter=50,
    batch_size=16,
    epochs=3,
    pretrain_epochs=1,
    lr=1e-3,
    bench_sizes=(16, 32, 48, 64),
    bench_batch=4,
    bench_repeats=5,
)

PRESETS: dict[str, Preset] = {
    "fast": _FAST,
    # the paper's set-up: only what differs from the textbook scale (blur, noise, solver and batch are shared)
    "paper": dataclasses.replace(
        _FAST,
        name="paper",
        description="the paper's set-up for a GPU: CelebA 128x128 RGB, 17-layer 64-channel network",
        dataset="celeba",
        image_size=128,
        n_train=8000,
        n_val=0,
        n_test=2000,
        depth=17,
        width=64,
        epochs=20,
        pretrain_epochs=5,
        lr=1e-4,
        bench_sizes=(16, 32, 48, 64, 80, 96, 112, 128),
        bench_batch=16,
        bench_repeats=20,
        device="cuda",
    ),
}


def get_preset(name: str | None = None, **overrides: Any) -> Preset:
    """The preset called ``name``, else ``$JFB_PRESET``, else ``fast``; then overrides.

    >>> get_preset("fast").image_size
    32
    """
    chosen = name if name is not None else os.environ.get(ENV_VAR, "").strip() or DEFAULT_PRESET
    if chosen not in PRESETS:
        source = "argument" if name is not None else f"environment variable {ENV_VAR}"
        raise UserError(
            f"unknown preset {chosen!r} (from the {source}); choose one of {sorted(PRESETS)}"
        )
    preset = PRESETS[chosen]
    return preset.replace(**overrides) if overrides else preset


__all__ = ["ACTIVATIONS", "ARCHS", "BATCHNORM_MODES", "BLURS", "DATA_STEPS", "GRAD_MODES", "PADDINGS", "BlurSetting", "DEFAULT_PRESET", "ENV_VAR", "PRESETS", "Preset",
           "check_keys", "get_preset"]
