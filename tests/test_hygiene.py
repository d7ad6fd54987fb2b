"""Repository hygiene: chapter pairs, executed notebooks, the book's table of contents."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
PY = sorted(CHAPTERS.glob("[0-9][0-9]*_*.py"))
NB = sorted(CHAPTERS.glob("[0-9][0-9]*_*.ipynb"))


def test_there_are_chapters():
    assert PY, "no chapters found"


def test_every_chapter_is_a_pair():
    assert [p.stem for p in PY] == [n.stem for n in NB]


@pytest.mark.parametrize("nb_path", NB, ids=lambda p: p.name)
def test_notebook_is_executed_cleanly_in_order(nb_path):
    nb = json.loads(nb_path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    counts = [c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code"]
    assert counts, "a chapter without code"
    assert counts == list(range(1, len(counts) + 1)), f"not executed top to bottom: {counts}"
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", f"error output in {nb_path.name}"
            text = "".join(out.get("text", ""))
            assert "Traceback" not in text


@pytest.mark.parametrize("nb_path", NB, ids=lambda p: p.name)
def test_notebook_has_no_huge_outputs(nb_path):
    # Figures are small PNGs; a notebook of many MB means a tensor was printed or
    # data was embedded.
    assert nb_path.stat().st_size < 3_000_000


def _toc_files(node):
    if isinstance(node, dict):
        if "file" in node:
            yield node["file"]
        for v in node.values():
            yield from _toc_files(v)
    elif isinstance(node, list):
        for v in node:
            yield from _toc_files(v)


def test_toc_lists_every_chapter_and_only_existing_files():
    toc = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())
    files = [toc["root"], *_toc_files(toc)]
    for f in files:
        assert any((ROOT / "book" / f).with_suffix(s).exists() for s in (".md", ".ipynb")), f
    listed = {f for f in files if f.startswith("chapters/")}
    assert listed == {f"chapters/{p.stem}" for p in NB}


def test_book_chapters_is_a_relative_symlink():
    link = ROOT / "book" / "chapters"
    assert link.is_symlink() and os.readlink(link) == "../chapters"


def test_readme_starts_with_the_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    commands = re.findall(r"^(make \w+)", text, flags=re.M)
    assert commands[:2] == ["make book", "make test"]


def test_no_large_or_data_files_are_tracked():
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False)
    if out.returncode != 0:
        pytest.fail("not a git checkout: run the tests from a clone of the repository")
    for name in filter(None, out.stdout.decode().split("\0")):
        path = ROOT / name
        if path.is_file() and not path.is_symlink():
            assert path.stat().st_size < 5_000_000, f"{name} is too large to commit"
        assert not re.search(r"\.(jpe?g|npz|npy)$", name, re.I), f"data file tracked: {name}"
        assert "img_align_celeba" not in name


def test_pytest_collects_each_notebook_once():
    """The book/chapters symlink and _build/ must not make nbval run a chapter twice."""
    import sys

    out = subprocess.run([sys.executable, "-m", "pytest", "--nbval", "--collect-only", "-q", "-p", "no:randomly"],
                         cwd=ROOT, capture_output=True, text=True, check=False).stdout
    files = {line.split("::")[0] for line in out.splitlines() if ".ipynb::" in line}
    assert files == {f"chapters/{n.name}" for n in NB}


LIBRARY = sorted((ROOT / "jfb_core").glob("*.py"))


def test_library_functions_are_short_and_import_the_library_at_the_top():
    """No function of jfb_core over 60 lines; no import of a jfb_core module inside a function."""
    import ast

    long, local = [], []
    for path in LIBRARY:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > 60:
                    long.append(f"{path.name}:{node.name}")
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("jfb_core"):
                        local.append(f"{path.name}:{node.name} imports {inner.module}")
                    if isinstance(inner, ast.Import) and any(a.name.startswith("jfb_core") for a in inner.names):
                        local.append(f"{path.name}:{node.name} imports jfb_core")
    assert not long, long
    assert not local, local


def test_the_library_import_graph_has_no_cycle():
    import ast

    graph = {}
    for path in LIBRARY:
        deps = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jfb_core"):
                deps.add(node.module.removeprefix("jfb_core").lstrip(".") or None)
                if node.module == "jfb_core":
                    deps.update(a.name for a in node.names if (ROOT / "jfb_core" / f"{a.name}.py").exists())
        graph[path.stem] = {d for d in deps if d and d != path.stem}
    state: dict[str, int] = {}

    def visit(name, chain):
        assert state.get(name) != 1, f"import cycle: {' -> '.join(chain + [name])}"
        if state.get(name) == 2:
            return
        state[name] = 1
        for dep in sorted(graph.get(name, ())):
            visit(dep, chain + [name])
        state[name] = 2

    for name in sorted(graph):
        visit(name, [])
    # the package docstring lists every module bottom-up: each imports only modules above it
    import jfb_core

    listed = re.findall(r"^``(\w+)``", jfb_core.__doc__, flags=re.M)
    assert sorted(listed) == sorted(p.stem for p in LIBRARY if not p.stem.startswith("__"))
    for i, name in enumerate(listed):
        assert graph[name] <= set(listed[:i]), f"{name} imports {graph[name] - set(listed[:i])}, listed below it"
    # the choices everyone imports sit low: config needs only the blur (for Preset.blur_operator)
    assert graph["config"] <= {"errors", "operators"} and graph["operators"] <= {"errors", "solvers"}
    assert graph["solvers"] <= {"errors"}
