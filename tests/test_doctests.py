"""Every docstring example in the library runs and holds (examples that need a model are skipped)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

# tasks/ and rewards/ are installed as these two; they do not lie under latentrl/.
PACKAGES = ("latentrl", "latentrl.tasks", "latentrl.rewards")
# Every module of these documents itself with examples.
EXAMPLES_REQUIRED = ("latentrl.losses", "latentrl.rewards")


def modules() -> list[str]:
    """Every module of the library, found by walking the packages (none listed by hand)."""
    names = set(PACKAGES)
    for package in PACKAGES:
        path = importlib.import_module(package).__path__
        names |= {info.name for info in pkgutil.walk_packages(path, f"{package}.")}
    return sorted(names)


@pytest.mark.parametrize("name", modules())
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    if name.startswith(EXAMPLES_REQUIRED):
        assert result.attempted > 0, f"{name} has no docstring examples"
