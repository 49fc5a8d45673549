"""Run the doctest examples of every losses module."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "latentrl.losses",
    "latentrl.losses.advantages",
    "latentrl.losses.contrastive",
    "latentrl.losses.policy",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0
