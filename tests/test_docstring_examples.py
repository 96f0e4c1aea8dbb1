"""The usage examples in the docstrings of vaezoo and of the built-in variants run and print what they show.

Examples marked ``# doctest: +SKIP`` need a trained model or data at hand and are left out, as doctest does.
"""
from __future__ import annotations

import doctest
import importlib
import io
import pkgutil

import pytest

import vaezoo
import vaezoo_plugins

MODULES = sorted(
    name for package in (vaezoo, vaezoo_plugins)
    for _, name, _ in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")
    if not name.endswith("__main__")  # importing it would run the command line
) + ["vaezoo", "vaezoo_entry", "vaezoo_plugins"]


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_run_as_shown(module_name: str) -> None:
    module = importlib.import_module(module_name)
    report = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder().find(module, module_name):
        runner.run(test, out=report.write)
    assert runner.failures == 0, report.getvalue()


def test_the_examples_are_found() -> None:
    examples = sum(len(test.examples) for name in MODULES
                   for test in doctest.DocTestFinder().find(importlib.import_module(name), name))
    assert examples > 200, f"only {examples} docstring examples found: is the module walk missing packages?"
