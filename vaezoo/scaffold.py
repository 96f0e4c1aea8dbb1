"""``vaezoo new-plugin NAME``: write a ready-to-install plugin package for a new variant.

    >>> from vaezoo.scaffold import new_plugin
    >>> plugin = new_plugin("sparse-vae", "plugins-src/sparse-vae")   # doctest: +SKIP
    >>> [str(p.relative_to(plugin.directory)) for p in plugin.files]  # doctest: +SKIP
    ['pyproject.toml', 'README.md', 'sparse_vae/__init__.py', 'sparse_vae/model.py', 'tests/test_sparse_vae.py']

The package holds a working VAE (a documented config dataclass, its modules, its loss), the entry
point that registers it, a test that runs :func:`vaezoo.testing.check_model` on it, and a README
on training, benchmarking and publishing it. ``pip install -e DIR`` and it is in ``vaezoo list``.
The templates live in ``vaezoo/templates/plugin``. The package is written into a hidden folder
beside ``DIR`` and renamed into place, so a failure part-way leaves nothing behind.
"""
from __future__ import annotations

import importlib.util
import keyword
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from vaezoo._version import __version__
from vaezoo.errors import ConfigError, StorageError
from vaezoo.io.atomic import describe_os_error
from vaezoo.zoo.registry import REGISTRY

TEMPLATE_DIR = Path(__file__).parent / "templates" / "plugin"
NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
MAX_NAME_LENGTH = 64  # the name becomes file, package and class names; 64 reads well and fits every file system


@dataclass
class PluginScaffold:
    """What :func:`new_plugin` wrote."""

    name: str  # the registry name, e.g. "sparse-vae"
    module: str  # the Python package, e.g. "sparse_vae"
    class_name: str  # the variant class, e.g. "SparseVAE"
    directory: Path
    files: list[Path] = field(default_factory=list)


def class_name_for(name: str) -> str:
    """``"sparse-vae"`` -> ``"SparseVAE"``, ``"glow"`` -> ``"GlowVAE"``."""
    words = ["VAE" if part == "vae" else part[:1].upper() + part[1:] for part in name.split("-")]
    joined = "".join(words)
    return joined if joined.endswith("VAE") else joined + "VAE"


def check_plugin_name(name: str) -> str:
    """Return the Python package name for ``name``; raise ConfigError if the name cannot be a new plugin."""
    if isinstance(name, str) and len(name) > MAX_NAME_LENGTH:
        raise ConfigError(f"plugin name {name[:20]!r}... has {len(name)} characters; use at most {MAX_NAME_LENGTH} "
                          "(e.g. 'sparse-vae')")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"plugin name {name!r} is not valid: use lowercase letters, digits and single hyphens, starting with "
            "a letter (e.g. 'sparse-vae'); a '.' is not allowed, it separates pretrained tags"
        )
    module = name.replace("-", "_")
    if keyword.iskeyword(module):
        raise ConfigError(f"plugin name {name!r} would make the Python package {module!r}, a keyword; choose another name")
    entry = REGISTRY.entries.get(name)
    if entry is not None:
        raise ConfigError(
            f"model name {name!r} is already registered by distribution {entry.distribution!r}; choose another "
            "name (`vaezoo list` shows the taken ones)"
        )
    if importlib.util.find_spec(module) is not None:
        raise ConfigError(
            f"a Python module named {module!r} is already importable here; choose another plugin name so the "
            "new package does not shadow it"
        )
    return module


def new_plugin(name: str, directory: str | Path | None = None) -> PluginScaffold:
    """Write the plugin package for variant ``name`` into ``directory`` (default ``./NAME``), which must be
    missing or empty. Raises ConfigError for an invalid or taken name, or a non-empty directory."""
    module = check_plugin_name(name)
    target = Path(directory if directory is not None else name)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"--dir {target} is a file; choose a folder that does not exist yet")
    if target.is_dir() and any(target.iterdir()):
        raise ConfigError(f"--dir {target} is not empty; choose a new folder, or empty that one first")
    class_name = class_name_for(name)
    values = {
        "name": name, "module": module, "class_name": class_name, "config_name": f"{class_name}Config",
        "distribution": f"vaezoo-{name}", "vaezoo_version": __version__,
    }
    layout = {
        "pyproject.toml": "pyproject.toml.tmpl",
        "README.md": "README.md.tmpl",
        f"{module}/__init__.py": "init.py.tmpl",
        f"{module}/model.py": "model.py.tmpl",
        f"tests/test_{module}.py": "test_model.py.tmpl",
    }
    texts = {relative: Template((TEMPLATE_DIR / template).read_text(encoding="utf-8")).substitute(values)
             for relative, template in layout.items()}
    _write_folder(target, texts)
    return PluginScaffold(name, module, class_name, target, [target / relative for relative in texts])


def _write_folder(target: Path, texts: dict[str, str]) -> None:
    """Write ``texts`` ({relative path: text}) as the folder ``target`` (missing or empty), all or nothing: into a
    hidden staging folder beside it, renamed into place. On any failure the staging folder, and any parent
    folder made for it, is removed; a folder already there is left as it was."""
    created = next((p for p in reversed([target.parent, *target.parent.parents]) if not p.exists()), None)
    staging = target.parent / f".{target.name[:32]}.{uuid.uuid4().hex[:8]}.staging"
    try:
        staging.mkdir(parents=True)
        for relative, text in texts.items():
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            (staging / relative).write_text(text, encoding="utf-8")
        os.replace(staging, target)  # target missing, or an empty folder: one rename either way
    except OSError as error:
        _remove(staging, created)
        raise StorageError(f"cannot write the plugin package to {target}: {describe_os_error(error)}; "
                           "nothing was left behind") from None
    except BaseException:
        _remove(staging, created)
        raise


def _remove(staging: Path, created: Path | None) -> None:
    shutil.rmtree(created if created is not None else staging, ignore_errors=True)
