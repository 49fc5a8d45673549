"""Run the doctest examples of every rewards module."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "latentrl.rewards",
    "latentrl.rewards._completions",
    "latentrl.rewards._worker",
    "latentrl.rewards.correctness",
    "latentrl.rewards.dual",
    "latentrl.rewards.extraction",
    "latentrl.rewards.format",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0
