"""Property-based tests (hypothesis) over every registered variant's tiny preset.

Any batch size, image or vector shape and valid config values give a model whose loss, gradients,
samples, reconstructions and log-likelihood have the right shapes and finite values; any value out
of a field's range or of the wrong type is a ConfigError naming the field. The zoo's convention,
which the second property checks for every field of every variant: sizes, counts, steps and
weights are non-negative, floats are finite, strings come from a known set.
"""
from __future__ import annotations

import math
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from robustness_cases import MAX_BATCH, MAX_FEATURES, MAX_SIDE, check_random_model, field_specs

import vaezoo
from vaezoo.core.config import config_fields, replace_config

VARIANTS = vaezoo.list_models()
PROPERTY_SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                             suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def strategy_for(spec: tuple) -> st.SearchStrategy:
    kind, *args = spec
    if kind == "int":
        return st.integers(args[0], args[1])
    if kind == "float":
        return st.floats(args[0], args[1], allow_nan=False)
    if kind == "choice":
        return st.sampled_from(args)
    min_len, max_len, low, high = args
    return st.lists(st.integers(low, high), min_size=min_len, max_size=max_len).map(tuple)


input_shapes = st.one_of(
    st.tuples(st.integers(1, 3), st.integers(1, MAX_SIDE), st.integers(1, MAX_SIDE)),  # (C, H, W)
    st.tuples(st.integers(1, MAX_FEATURES)),  # (D,)
)


@pytest.mark.parametrize("name", VARIANTS)
@PROPERTY_SETTINGS
@given(data=st.data(), input_shape=input_shapes, batch=st.integers(1, MAX_BATCH))
def test_valid_shapes_batches_and_configs_give_finite_outputs(name: str, data, input_shape, batch: int) -> None:
    model_class = vaezoo.get_model_class(name)
    specs = field_specs(model_class)
    fields = data.draw(st.lists(st.sampled_from(list(specs)), unique=True, max_size=4), label="fields")
    values = {field: data.draw(strategy_for(specs[field]), label=field) for field in fields}
    check_random_model(name, input_shape, batch, values)


def invalid_values(hint: typing.Any) -> st.SearchStrategy:
    """Values no field of type ``hint`` accepts (under the zoo's convention in the module docstring)."""
    words = st.text(min_size=1, max_size=8).map(lambda text: "no-such-" + text)
    bad_floats = st.sampled_from([math.nan, math.inf, -math.inf]) | st.floats(max_value=-1e-6, allow_infinity=False)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return st.integers(2, 5) | words
    if hint is int:
        return st.integers(max_value=-1) | words | st.floats(0.1, 0.9)
    if hint is float or (origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and float in args):
        return bad_floats | words
    if hint is str:
        return words | st.integers()
    if origin is tuple:
        return st.lists(st.integers(max_value=0), min_size=1, max_size=3).map(tuple) | st.lists(words, min_size=1, max_size=2)
    raise AssertionError(f"no invalid values known for {hint!r}; add them here")


@pytest.mark.parametrize("name", VARIANTS)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_out_of_range_or_mistyped_values_are_config_errors(name: str, data) -> None:
    config_class = vaezoo.get_model_class(name).config_class
    hints = typing.get_type_hints(config_class)
    field = data.draw(st.sampled_from(sorted(config_fields(config_class))), label="field")
    value = data.draw(invalid_values(hints[field]), label="value")
    base = vaezoo.create_model(name, preset="tiny", input_shape=(1, 8, 8)).config
    with pytest.raises(vaezoo.ConfigError) as info:
        replace_config(base, **{field: value})
    assert field in str(info.value) and "\n" not in str(info.value)
