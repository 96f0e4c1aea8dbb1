"""The layout the code promises (README, "How the code is laid out"): layers that import one way, checked by
import-linter; no vaezoo import hidden in a function to dodge a cycle; one job per module, stated in one line."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

import vaezoo

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(vaezoo.__file__).parent
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "templates" not in p.parts)
MAX_LINES = 400


def lint_imports(*config: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("lint-imports") or [sys.executable, "-m", "importlinter.cli"]
    command = [executable] if isinstance(executable, str) else executable
    return subprocess.run([*command, *(["--config", config[0]] if config else [])], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_the_layers_and_the_plugin_boundary_hold() -> None:
    result = lint_imports()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


def test_a_layer_importing_upwards_fails_naming_the_chain(tmp_path: Path) -> None:
    """The linter really checks: the same layers listed upside down are broken, and the report names an import."""
    config = tmp_path / "upside-down.toml"
    config.write_text(
        '[tool.importlinter]\nroot_packages = ["vaezoo"]\n\n[[tool.importlinter.contracts]]\n'
        'name = "upside down"\ntype = "layers"\nlayers = ["vaezoo.core", "vaezoo.zoo"]\n', encoding="utf-8")
    result = lint_imports(str(config))
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "vaezoo.zoo." in result.stdout and "-> vaezoo.core." in result.stdout


def function_level_vaezoo_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("vaezoo")):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} from {'.' * node.level}{node.module or ''}")
            if isinstance(node, ast.Import) and any(alias.name.startswith("vaezoo") for alias in node.names):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} import {node.names[0].name}")
    return found


def test_no_vaezoo_import_is_hidden_inside_a_function() -> None:
    """Function-level imports are for heavy optional libraries only, never to dodge a cycle."""
    found = [line for path in MODULES for line in function_level_vaezoo_imports(path)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_module_states_its_one_job_and_stays_small(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    docstring = ast.get_docstring(ast.parse(source))
    assert docstring, f"{path.name} has no module docstring; its first line should say what the module is for"
    first = docstring.splitlines()[0]
    assert first.strip() and len(first) <= 130, f"{path.name}: the first docstring line should be one line: {first!r}"
    lines = source.count("\n")
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines; split it (at most about {MAX_LINES})"


def test_every_subpackage_ships_in_the_wheel() -> None:
    """pyproject.toml lists packages by hand (plugins/ installs as vaezoo_plugins), so a new layer must be added there."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    found = {".".join(path.parent.relative_to(PACKAGE.parent).parts) for path in PACKAGE.rglob("__init__.py")}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml"


def test_every_subpackage_imports_by_its_dotted_name() -> None:
    """A public function must not shadow a sub-package (vaezoo.train the function vs. a vaezoo.train package)."""
    code = "; ".join(f"import {name} as module_{i}" for i, name in enumerate(
        ".".join(path.with_suffix("").relative_to(PACKAGE.parent).parts).removesuffix(".__init__") for path in MODULES
        if path.name != "__main__.py"))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
