"""Where a number came from: machine, versions, git commit, command line.

Every artefact in ``results/`` carries this record so a reader can tell a CPU
textbook-scale number from a GPU paper-scale one.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable

from jfb_core import __version__
from jfb_core.errors import UserError


def _git(*args: str) -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _git_commit() -> str | None:
    return _git("rev-parse", "HEAD") or None


def _git_dirty() -> bool | None:
    """Whether the library's own files differ from the commit (None outside a checkout)."""
    status = _git("status", "--porcelain", "--untracked-files=no", "--", str(Path(__file__).resolve().parent))
    return None if status is None else bool(status)


def command_line(argv: list[str] | None = None) -> str:
    """The command as a user would type it: ``python -m jfb_core ...`` for the module entry point."""
    argv = list(sys.argv if argv is None else argv)
    prog = Path(argv[0]).name if argv else ""
    if prog in ("__main__.py", "-m"):
        prog = "python -m jfb_core"
    return " ".join([prog, *argv[1:]]).strip()


def device_description(device: str | None = None) -> str:
    """A human-readable name of the compute device, e.g. ``'cpu (2 threads)'``."""
    import torch

    dev = torch.device(device) if device else torch.device("cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(dev)}"
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'' if n == 1 else 's'})"


def environment_info(device: str | None = None) -> dict[str, Any]:
    """Machine, library versions and device, as a JSON-serialisable dict."""
    import numpy
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": str(torch.__version__),
        "numpy": str(numpy.__version__),
        "jfb_core": __version__,
        "cuda_available": torch.cuda.is_available(),
        "device": device_description(device),
    }
    try:
        import torchvision

        info["torchvision"] = str(torchvision.__version__)
    except ImportError:  # pragma: no cover - torchvision is a dependency
        info["torchvision"] = None
    if torch.cuda.is_available():
        info["cuda"] = str(torch.version.cuda)
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def provenance(config: dict[str, Any] | None = None, device: str | None = None) -> dict[str, Any]:
    """The record stored beside every result: time, command, commit, environment, config."""
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command_line(),
        "git_commit": _git_commit(),
        "library_modified_since_commit": _git_dirty(),
        "environment": environment_info(device),
        "config": config or {},
    }


def check_writable(path: str | os.PathLike[str], flag: str = "--out", folder: bool = False) -> Path:
    """``path`` if a file (or, with ``folder``, a folder) can be created there, else a
    :class:`UserError` naming it; checked before any work so that none is lost at the end.

    A dangling symbolic link is refused (its target is named) rather than followed; the
    nearest existing folder above ``path`` must accept a new file, which catches read-only
    file systems as well as missing permissions."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise UserError(f"{flag} {path} is a symbolic link to {os.readlink(path)}, which does not exist; "
                        f"create the target or give another {flag}")
    if folder and path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file; give a folder")
    if not folder and path.is_dir():
        raise UserError(f"{flag} {path} is a directory; give a file name")
    existing = path if folder and path.is_dir() else next((q for q in path.parents if q.exists()), Path("."))
    if not existing.is_dir():
        raise UserError(f"cannot write {flag} {path}: {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"cannot write {flag} {path}: {existing} is not writable ({exc.strerror or exc})") from None
    return path


def _temp_name(path: Path) -> Path:
    """A temporary file beside ``path``, unique to this process and call."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _replace_atomically(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` to a fresh temporary file beside ``path``, then rename it over ``path``.

    A crash or an error leaves the old file intact and no temporary file behind; two
    processes never share a temporary name."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory; give a file name to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_json(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON atomically (temporary file, then rename)."""
    text = json.dumps(payload, indent=2, sort_keys=False) + "\n"
    return _replace_atomically(path, lambda tmp: tmp.write_text(text))


def save_atomic(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to a temporary file, then an atomic rename: a crash leaves the old file intact."""
    import torch

    return _replace_atomically(path, lambda tmp: torch.save(obj, tmp))


def find_results_dir(start: str | os.PathLike[str] | None = None) -> Path:
    """The repository's ``results/`` folder, searched upwards from ``start`` (default: cwd).

    Chapters run from ``chapters/`` (JupyterLab, nbval) or from the repository root;
    both find the committed artefacts this way.
    """
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "results").is_dir() and (folder / "jfb_core").is_dir():
            return folder / "results"
    raise FileNotFoundError(f"no results/ folder of the course above {here}")
