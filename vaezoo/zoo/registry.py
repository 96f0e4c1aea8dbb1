"""The registry of names: model names -> variant classes, discovered through entry points.

Every variant, the built-ins included, comes from the entry-point group ``vaezoo.models``::

    [project.entry-points."vaezoo.models"]
    my-vae = "my_pkg:MyVAE"

Discovery reads entry-point metadata only; a plugin's module is imported the first time its
model is built or its tags are listed. A plugin that fails to import is skipped with one warning.
Names take the form ``arch`` or ``arch.tag``, where a tag names a pretrained config (as in timm).
Building models from names is vaezoo.zoo.factory's job; this module only knows names.

>>> import vaezoo
>>> "vae-mlp" in vaezoo.list_models()
True
>>> vaezoo.list_models("*vae", pretrained=False)[:2]
['beta-vae', 'cvae']
"""
from __future__ import annotations

import fnmatch
import importlib.metadata
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any

from vaezoo.core.config import VAEConfig
from vaezoo.core.model import VAE
from vaezoo.errors import PluginError, UnknownModelError, did_you_mean

logger = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "vaezoo.models"
AUTOLOAD_SWITCH = "VAEZOO_DISABLE_PLUGIN_AUTOLOAD"  # "1": only vaezoo's own variants are loaded
BUILTIN_DISTRIBUTION = "vaezoo"


@dataclass
class ModelEntry:
    """One registered name: where it comes from, and its class once imported."""

    name: str
    target: str  # "module:attr" of the entry point, or the class's qualified name
    distribution: str  # the distribution that declared it, "<runtime>" for register_model
    model_class: type | None = None
    load_error: str | None = None

    def load(self) -> type:
        if self.model_class is not None:
            return self.model_class
        if self.load_error is not None:
            raise PluginError(self.load_error)
        try:
            module_name, _, attr = self.target.partition(":")
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (Exception, SystemExit) as error:  # any failure inside third-party code must not stop the zoo
            self.load_error = (
                f"plugin entry point {self.name!r} = {self.target!r} from distribution {self.distribution!r} "
                f"failed to import: {type(error).__name__}: {error}"
            )
            warnings.warn(self.load_error + "; it is skipped", RuntimeWarning, stacklevel=3)
            raise PluginError(self.load_error) from None
        where = f"entry point {self.name!r} = {self.target!r} ({self.distribution})"
        self.model_class = claim_name(check_model_class(obj, where), self.name, where)
        return self.model_class


def claim_name(model_class: type[VAE], name: str, where: str) -> type[VAE]:
    """Give the class its registry name (once: a model knows its name from its class, so it saves and loads).

    A class that declares ``registry_name`` itself must be registered under that name, since its
    config.json will name it so.
    """
    declared = model_class.__dict__.get("registry_name")
    if declared is None:
        model_class.registry_name = name
    elif declared != name:
        raise PluginError(f"{where}: {model_class.__name__}.registry_name is {declared!r}, not {name!r}; "
                          "register it under the name it declares (or drop registry_name from the class)")
    return model_class


def check_model_class(obj: Any, where: str) -> type:
    """Check that a plugin object follows the model contract; raise PluginError naming the gap."""
    if not (isinstance(obj, type) and issubclass(obj, VAE)):
        raise PluginError(f"{where} gives {obj!r}, which is not a subclass of vaezoo.VAE; subclass it")
    if not (isinstance(obj.config_class, type) and issubclass(obj.config_class, VAEConfig)):
        raise PluginError(f"{where}: {obj.__name__}.config_class must be a dataclass deriving from vaezoo.VAEConfig")
    missing = [method for method in CONTRACT_METHODS if getattr(obj, method) is getattr(VAE, method)]
    if missing:
        raise PluginError(f"{where}: {obj.__name__} does not implement {', '.join(missing)}; the model contract needs "
                          f"{', '.join(CONTRACT_METHODS)} (see CONTRIBUTING.md)")
    return obj


CONTRACT_METHODS = ("encode", "decode", "forward")


class Registry:
    """Holds the entries; the module-level functions below use one shared instance."""

    def __init__(self) -> None:
        self._entries: dict[str, ModelEntry] | None = None
        self._conflicts: dict[str, list[ModelEntry]] = {}

    def refresh(self) -> None:
        """Forget everything and scan the entry points again (after installing a plugin)."""
        self._entries = None
        self._conflicts = {}

    @property
    def entries(self) -> dict[str, ModelEntry]:
        if self._entries is None:
            self._entries = {}
            self._discover()
        return self._entries

    def _discover(self) -> None:
        builtins_only = os.environ.get(AUTOLOAD_SWITCH, "").strip() not in ("", "0")
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            distribution = ep.dist.name if ep.dist is not None else "<unknown>"
            if builtins_only and distribution != BUILTIN_DISTRIBUTION:
                continue
            self._add(ModelEntry(ep.name, ep.value, distribution))

    def _add(self, entry: ModelEntry) -> None:
        assert self._entries is not None
        if "." in entry.name or not entry.name:
            warnings.warn(
                f"plugin entry point {entry.name!r} from {entry.distribution!r} is skipped: "
                "model names may not be empty or contain '.', which separates pretrained tags",
                RuntimeWarning,
                stacklevel=3,
            )
            return
        existing = self._entries.get(entry.name)
        if existing is not None and existing.distribution != entry.distribution:
            self._conflicts.setdefault(entry.name, [existing]).append(entry)
            warnings.warn(
                f"model name {entry.name!r} is claimed by distributions {existing.distribution!r} and "
                f"{entry.distribution!r}; it cannot be built until one of them is uninstalled",
                RuntimeWarning,
                stacklevel=3,
            )
            return
        self._entries[entry.name] = entry

    def register(self, name: str, model_class: type, distribution: str = "<runtime>") -> None:
        check_model_class(model_class, f"register_model({name!r})")
        self.entries  # discover first, so a runtime name cannot silently shadow an installed one
        claim_name(model_class, name, f"register_model({name!r})")
        self._add(ModelEntry(name, f"{model_class.__module__}:{model_class.__qualname__}", distribution, model_class))

    def get(self, name: str) -> ModelEntry:
        entries = self.entries
        if name in self._conflicts:
            claims = " and ".join(f"{e.distribution!r} ({e.target})" for e in self._conflicts[name])
            raise PluginError(f"model name {name!r} is claimed by two distributions: {claims}; uninstall one of them")
        if name not in entries:
            raise UnknownModelError(
                f"unknown model {name!r}" + did_you_mean(name, entries) + "; run `vaezoo list` to see every name"
            )
        return entries[name]


REGISTRY = Registry()


def split_name(name: str) -> tuple[str, str | None]:
    """``"vae-mlp.fmnist"`` -> ``("vae-mlp", "fmnist")``; ``"vae-mlp"`` -> ``("vae-mlp", None)``."""
    arch, _, tag = name.partition(".")
    return arch, (tag or None)


def get_model_class(name: str) -> type:
    """The variant class behind ``name`` (an arch or ``arch.tag``), importing its plugin if needed."""
    return REGISTRY.get(split_name(name)[0]).load()


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Sorted model names matching an fnmatch ``pattern``; with ``pretrained=True``, ``arch.tag`` names.

    Listing plain names imports no plugin. Listing tags imports each plugin; one that fails is
    skipped with a warning.

    >>> list_models("vq*")
    ['vq-vae']
    """
    names = sorted(REGISTRY.entries)
    if not pretrained:
        return [name for name in names if fnmatch.fnmatchcase(name, pattern)]
    tags = []
    for name in names:
        try:
            model_class = REGISTRY.get(name).load()
        except PluginError:
            continue
        tags += [f"{name}.{tag}" for tag in model_class.pretrained_tags]
    return sorted(tag for tag in tags if fnmatch.fnmatchcase(tag, pattern))


def is_model(name: str) -> bool:
    """True when ``name`` is a registered arch, or an ``arch.tag`` whose tag exists."""
    arch, tag = split_name(name)
    if arch not in REGISTRY.entries:
        return False
    if tag is None:
        return True
    try:
        return tag in get_model_class(arch).pretrained_tags
    except PluginError:
        return False


def register_model(model_class: type, name: str | None = None) -> type:
    """Register a class at run time (notebooks, tests); installed plugins use entry points instead.

    Usable as a decorator: ``@register_model`` or ``register_model(MyVAE, "my-vae")``. Without a name it uses
    the class's ``registry_name``, else its lowercased class name.
    """
    REGISTRY.register(name or getattr(model_class, "registry_name", None) or model_class.__name__.lower(), model_class)
    return model_class
