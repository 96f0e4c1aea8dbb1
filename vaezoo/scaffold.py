"""``vaezoo new-plugin NAME``: write a ready-to-install plugin package for a new variant.

    >>> from vaezoo.scaffold import new_plugin
    >>> plugin = new_plugin("sparse-vae", "plugins-src/sparse-vae")   # doctest: +SKIP
    >>> [str(p.relative_to(plugin.directory)) for p in plugin.files]  # doctest: +SKIP
    ['pyproject.toml', 'README.md', 'sparse_vae/__init__.py', 'sparse_vae/model.py', 'tests/test_sparse_vae.py']

The package holds a working VAE (a documented config dataclass, its modules, its loss), the entry
point that registers it, a test that runs :func:`vaezoo.testing.check_model` on it, and a README
on training, benchmarking and publishing it. ``pip install -e DIR`` and it is in ``vaezoo list``.
The templates live in ``vaezoo/templates/plugin``.
"""
from __future__ import annotations

import importlib.util
import keyword
import re
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from vaezoo._version import __version__
from vaezoo.errors import ConfigError
from vaezoo.io.atomic import atomic_write_text
from vaezoo.zoo.registry import REGISTRY

TEMPLATE_DIR = Path(__file__).parent / "templates" / "plugin"
NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")


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
    scaffold = PluginScaffold(name, module, class_name, target)
    for relative, template in layout.items():
        text = Template((TEMPLATE_DIR / template).read_text(encoding="utf-8")).substitute(values)
        atomic_write_text(target / relative, text)
        scaffold.files.append(target / relative)
    return scaffold
