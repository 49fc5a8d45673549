"""The package layout: every source folder is installed, tasks/ and rewards/ exist only as
latentrl.tasks and latentrl.rewards, every module imports in a fresh interpreter, and the
import graph (every import statement, those inside functions too) has no cycle and keeps
its layers: trainers do not import eval, models do not import tasks."""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
# (importer, imported): module-name prefixes that must never meet.
FORBIDDEN = [
    ("latentrl.trainers", "latentrl.eval"),
    ("latentrl.models", "latentrl.tasks"),
    ("latentrl.tasks", "latentrl.trainers"),
    ("latentrl.rewards", "latentrl.trainers"),
]


def source_modules() -> dict[str, Path]:
    """Module name -> source file, for every module the package-dir mapping installs."""
    modules = {}
    for package, folder in SETUPTOOLS["package-dir"].items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            modules[".".join((package, *parts))] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The library modules ``name`` imports anywhere in its file (inside functions too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *filter(None, [node.module])])
            submodules = [f"{base}.{alias.name}" for alias in node.names]
            targets = [base, *(t for t in submodules if t in modules)]
            if len(targets) == len(node.names) + 1:  # `from . import a, b`: only the modules
                targets = targets[1:]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # an object inside a module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def test_every_package_folder_is_installed():
    packages = {name for name, path in source_modules().items() if path.name == "__init__.py"}
    assert sorted(SETUPTOOLS["packages"]) == sorted(packages)


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(source_modules())
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)"
    result = subprocess.run(
        [sys.executable, "-c", script, *names], cwd=ROOT / "tests", capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_import_graph_has_no_cycle_and_keeps_its_layers():
    modules = source_modules()
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    assert "latentrl.tasks.shapes_vqa" in graph["latentrl.tasks.registry"]  # it sees imports
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the cycle
    leaks = [
        f"{importer} imports {imported}"
        for importer, imported_set in graph.items()
        for imported in imported_set
        for low, high in FORBIDDEN
        if importer.startswith(low) and imported.startswith(high)
    ]
    assert leaks == []


@pytest.mark.parametrize("folder", ["tasks", "rewards"])
def test_source_folders_cannot_be_imported_as_a_second_copy(folder):
    result = subprocess.run(
        [sys.executable, "-c", f"import {folder}"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert f"ImportError: import latentrl.{folder}, not {folder}" in result.stderr


MAX_FILE_LINES, MAX_FUNCTION_LINES = 600, 80
RECIPES = ["dlr", "cocova", "laser"]
REPEAT_WINDOW = 6


def test_no_source_file_or_function_is_too_long():
    too_long = []
    for path in source_modules().values():
        source = path.read_text()
        if source.count("\n") > MAX_FILE_LINES:
            too_long.append(f"{path.relative_to(ROOT)}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length}")
    assert too_long == []


def code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of a file's code: no blank lines, no lines of brackets
    only, no import statements (recipes importing the same names repeat nothing)."""
    source = path.read_text()
    imports = {
        line
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for line in range(node.lineno, node.end_lineno + 1)
    }
    return [
        (number, text.strip())
        for number, text in enumerate(source.splitlines(), 1)
        if number not in imports
        and text.strip().strip("()[]{},:")
        and text.strip() != ")  # fmt: skip"
    ]


def test_the_recipes_share_their_skeleton_instead_of_copying_it():
    seen: dict[tuple[str, ...], str] = {}
    copies = []
    for recipe in RECIPES:
        path = ROOT / "latentrl" / "trainers" / f"{recipe}.py"
        lines = code_lines(path)
        for i in range(len(lines) - REPEAT_WINDOW + 1):
            window = tuple(text for _, text in lines[i : i + REPEAT_WINDOW])
            where = f"{recipe}.py:{lines[i][0]}"
            first = seen.setdefault(window, where)
            if not first.startswith(f"{recipe}.py"):
                copies.append(f"{where} repeats {first}")
    assert copies == []


def test_test_folders_mirror_the_package():
    # tests/<package>/ for each package (tests/real_model: the real-LLM tests, by model).
    packages = {name.split(".")[1] for name in source_modules() if name.count(".") >= 1}
    folders = {p.name for p in (ROOT / "tests").iterdir() if (p / "__init__.py").is_file()}
    assert folders - {"real_model"} <= packages, folders - packages
