"""Inherited config fields a variant does not read are refused, not silently ignored; derived ones stay derived."""
from __future__ import annotations

import re

import pytest

from vaezoo.core.config import config_from_dict, config_to_dict
from vaezoo.errors import ConfigError
from vaezoo.zoo.registry import get_model_class, list_models


@pytest.mark.parametrize("name", list_models())
def test_every_default_config_survives_its_config_json(name: str) -> None:
    config_class = get_model_class(name).config_class
    config = config_class()
    assert config_from_dict(config_class, config_to_dict(config)) == config


@pytest.mark.parametrize("name", ["autoencoder-kl", "vdvae"])
def test_a_derived_latent_dim_follows_latent_channels_through_config_json(name: str) -> None:
    config_class = get_model_class(name).config_class
    config = config_class(latent_channels=12)
    assert config.latent_dim == 12
    saved = config_to_dict(config)
    assert saved["latent_dim"] == 12
    assert config_from_dict(config_class, saved).latent_dim == 12
    assert config_class(latent_channels=12, latent_dim=12).latent_dim == 12  # the derived value itself is accepted
    with pytest.raises(ConfigError, match="latent_dim=5 does not apply .* set latent_channels=5 instead"):
        config_class(latent_channels=12, latent_dim=5)


@pytest.mark.parametrize("name", list_models())
def test_each_declared_unused_field_is_refused_away_from_its_default_and_accepted_at_it(name: str) -> None:
    config_class = get_model_class(name).config_class
    defaults = config_to_dict(config_class())
    for field, instead in config_class.unused_fields.items():
        assert field in defaults, f"{name} declares unused field {field!r}, which its config does not have"
        assert config_class(**{field: getattr(config_class(), field)}) == config_class()  # the default is accepted
        other = _another_value(getattr(config_class(), field))
        message = f"has no effect on {config_class.__name__}, whose networks take {instead} instead"
        with pytest.raises(ConfigError, match=re.escape(message)):
            config_class(**{field: other})


def _another_value(value: object) -> object:
    if isinstance(value, str):
        return "mlp" if value != "mlp" else "conv"
    if isinstance(value, tuple):
        return (*value, 8)
    assert isinstance(value, int)
    return value + 1


def test_the_variants_that_own_their_networks_declare_the_inherited_fields_they_ignore() -> None:
    assert set(get_model_class("autoencoder-kl").config_class.unused_fields) == {"encoder", "decoder", "hidden_dims",
                                                                                 "conv_channels"}
    assert set(get_model_class("vdvae").config_class.unused_fields) == {"encoder", "decoder", "hidden_dims",
                                                                        "conv_channels"}
    assert set(get_model_class("vq-vae").config_class.unused_fields) == {"latent_dim"}
    for name in ("autoencoder-kl", "vdvae"):
        assert get_model_class(name).config_class.derived_fields == {"latent_dim": "latent_channels"}
    assert get_model_class("vae-mlp").config_class.unused_fields == {}
