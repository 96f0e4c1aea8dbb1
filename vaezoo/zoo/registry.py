"""The registry of names: model names -> variant classes, discovered through entry points.

Every variant, the built-ins included, comes from the entry-point group ``vaezoo.models``::

    [project.entry-points."vaezoo.models"]
    my-vae = "my_pkg:MyVAE"

Discovery reads entry-point metadata only; a plugin's module is imported the first time its
model is built or its tags are listed, so ``vaezoo list`` and commands on the built-ins never run
third-party code. A plugin that is broken (its import fails, or what it declares does not hold:
see :func:`check_declarations`) is skipped by every listing with one warning naming it, its
distribution and the fix; asking for it by name is a one-line PluginError.
Names take the form ``arch`` or ``arch.tag``, where a tag names a pretrained config (as in timm).
Building models from names is vaezoo.zoo.factory's job; this module only knows names.

>>> import vaezoo
>>> "vae-mlp" in vaezoo.list_models()
True
>>> vaezoo.list_models("*vae", pretrained=False)[:2]
['beta-tcvae', 'beta-vae']
"""
from __future__ import annotations

import fnmatch
import importlib.metadata
import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vaezoo.core.config import VAEConfig, config_fields, replace_config
from vaezoo.core.contract import Capabilities
from vaezoo.core.model import VAE
from vaezoo.errors import PluginError, UnknownModelError, VAEZooError, did_you_mean, one_line
from vaezoo.zoo.plugin_guard import MAX_REASON, PluginImportError, guarded_import
from vaezoo.zoo.tags import PretrainedTag

logger = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "vaezoo.models"
AUTOLOAD_SWITCH = "VAEZOO_DISABLE_PLUGIN_AUTOLOAD"  # "1": only vaezoo's own variants are loaded
BUILTIN_DISTRIBUTION = "vaezoo"


@dataclass
class ModelEntry:
    """One registered name: where it comes from, and its class once imported (or why it cannot be)."""

    name: str
    target: str  # "module:attr" of the entry point, or the class's qualified name
    distribution: str  # the distribution that declared it, "<runtime>" for register_model
    model_class: type | None = None
    problem: str | None = None  # why the plugin is broken, once its import or its checks failed
    reported: bool = False  # a listing has warned about it

    def load(self) -> type:
        """The class, importing and checking the plugin the first time; PluginError (one line) when it is broken."""
        if self.model_class is None and self.problem is None:
            self.model_class, self.problem = self._import_and_check()
        if self.model_class is None:
            raise PluginError(f"{self.problem}; uninstall or upgrade {self.distribution!r}")
        return self.model_class

    def _import_and_check(self) -> tuple[type | None, str | None]:
        try:
            obj = guarded_import(self.target)
        except PluginImportError as error:
            return None, (f"plugin entry point {self.name!r} = {self.target!r} from distribution {self.distribution!r} "
                          f"failed to import: {error}")
        where = f"entry point {self.name!r} = {self.target!r} ({self.distribution})"
        try:
            return check_declarations(claim_name(check_model_class(obj, where), self.name, where), where), None
        except PluginError as error:
            return None, str(error)

    def report(self) -> None:
        """Warn, once, that a listing skips this broken plugin."""
        if not self.reported and self.problem is not None:
            self.reported = True
            warnings.warn(f"{self.problem}; it is skipped (uninstall or upgrade {self.distribution!r})", RuntimeWarning,
                          stacklevel=4)


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


def check_declarations(model_class: type[VAE], where: str) -> type[VAE]:
    """Check what a variant declares besides its methods, so that listing and describing it cannot fail later.

    ``capabilities`` is a Capabilities, ``reported_metrics`` maps names to meanings, the config class
    builds its defaults, presets name config fields, and each pretrained tag is a
    :class:`PretrainedTag` whose config applies to the defaults (as building ``arch.tag`` does).
    """
    name = model_class.__name__
    if not isinstance(model_class.capabilities, Capabilities):
        raise PluginError(f"{where}: {name}.capabilities={model_class.capabilities!r:.80} is not a vaezoo.Capabilities; "
                          "declare capabilities = Capabilities(...)")
    metrics = model_class.reported_metrics
    if not (isinstance(metrics, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in metrics.items())):
        raise PluginError(f"{where}: {name}.reported_metrics={metrics!r:.80} must map metric names to what they mean")
    try:
        defaults = model_class.config_class()
    except Exception as error:  # the variant's own code: any failure is the plugin's
        raise PluginError(f"{where}: its config class {model_class.config_class.__name__} cannot build its defaults "
                          f"({type(error).__name__}: {one_line(error, MAX_REASON)})") from None
    fields = config_fields(model_class.config_class)
    for preset, overrides in _named(model_class.presets, f"{name}.presets", Mapping, "a dict of config fields", where):
        unknown = [key for key in overrides if key not in fields]
        if unknown:
            raise PluginError(f"{where}: {name}.presets[{preset!r}] sets the unknown config field {unknown[0]!r}"
                              + did_you_mean(str(unknown[0]), fields))
    tags = _named(model_class.pretrained_tags, f"{name}.pretrained_tags", PretrainedTag,
                  "a vaezoo.PretrainedTag(config, dataset=...)", where)
    for tag, declared in tags:
        source = f"{name}.pretrained_tags[{tag!r}]"
        try:
            replace_config(defaults, source=source, **declared.config)
        except VAEZooError as error:
            raise PluginError(f"{where}: {one_line(error, MAX_REASON)}") from None
        except Exception as error:  # the variant's __post_init__
            raise PluginError(f"{where}: {source} does not build ({type(error).__name__}: {one_line(error, MAX_REASON)})") from None
    return model_class


def _named(declared: Any, what: str, kind: type, kind_name: str, where: str) -> list[tuple[str, Any]]:
    """The (name, value) pairs of a class's dict of presets or tags, each value checked to be a ``kind``."""
    if not (isinstance(declared, Mapping) and all(isinstance(key, str) and key for key in declared)):
        raise PluginError(f"{where}: {what}={declared!r:.80} must be a dict keyed by non-empty names")
    for key, value in declared.items():
        if not isinstance(value, kind):
            raise PluginError(f"{where}: {what}[{key!r}] is a {type(value).__name__}, not {kind_name}")
    return list(declared.items())


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
        check_declarations(claim_name(model_class, name, f"register_model({name!r})"), f"register_model({name!r})")
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

    def loadable(self, names: list[str]) -> list[str]:
        """The ``names`` whose plugin imports and holds; each broken one is skipped with one warning."""
        kept = []
        for name in names:
            try:
                self.get(name).load()
            except PluginError:
                if name in self.entries and name not in self._conflicts:  # a conflict was warned about when found
                    self.entries[name].report()
                continue
            kept.append(name)
        return kept


REGISTRY = Registry()


def split_name(name: str) -> tuple[str, str | None]:
    """``"vae-mlp.fmnist"`` -> ``("vae-mlp", "fmnist")``; ``"vae-mlp"`` -> ``("vae-mlp", None)``."""
    arch, _, tag = name.partition(".")
    return arch, (tag or None)


def get_model_class(name: str) -> type:
    """The variant class behind ``name`` (an arch or ``arch.tag``), importing its plugin if needed."""
    return REGISTRY.get(split_name(name)[0]).load()


def list_models(pattern: str = "*", pretrained: bool = False, loadable: bool = False) -> list[str]:
    """Sorted model names matching an fnmatch ``pattern``; with ``pretrained=True``, ``arch.tag`` names.

    Listing plain names imports no plugin. ``loadable=True`` imports each matching plugin and leaves
    out the broken ones (what a command that uses every model needs); listing tags does the same.
    Each broken plugin is reported once, with a warning.

    >>> list_models("vq*")
    ['vq-vae']
    """
    names = sorted(REGISTRY.entries)
    if not pretrained:
        names = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
        return REGISTRY.loadable(names) if loadable else names
    tags = [f"{name}.{tag}" for name in REGISTRY.loadable(names) for tag in get_model_class(name).pretrained_tags]
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
