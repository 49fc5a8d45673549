"""Every docstring example in the library runs and holds (examples that need a model are skipped)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = [
    "latentrl.config",
    "latentrl.inspection",
    "latentrl.losses",
    "latentrl.models.named",
    "latentrl.prompts",
    "latentrl.rewards",
    "latentrl.seeds",
    "latentrl.tasks",
]
# Every module of these documents itself with examples.
EXAMPLES_REQUIRED = ("latentrl.losses", "latentrl.rewards")


def modules() -> list[str]:
    names = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        names.append(package)
        if hasattr(module, "__path__"):
            names += [f"{package}.{info.name}" for info in pkgutil.iter_modules(module.__path__)]
    return names


@pytest.mark.parametrize("name", modules())
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    if name.startswith(EXAMPLES_REQUIRED):
        assert result.attempted > 0, f"{name} has no docstring examples"
