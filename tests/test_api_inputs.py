"""The Python API on inputs people really pass: other float dtypes, half-precision models, empty batches, numpy
counts, labels of the wrong kind, and sizes far too large, which are refused before any work is done.

Each behaviour here gives a correct result or one VAEZooError naming the value and the fix; the same inputs
through the CLI are cases in robustness_cases.py (API_CASES).
"""
from __future__ import annotations

import errno
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import vaezoo
from vaezoo import apps
from vaezoo.core.sizes import MAX_PARAMETERS
from vaezoo.scaffold import new_plugin
from vaezoo.training.runs import train_run

BUILT_IN = ["vae-mlp", "cvae", "beta-vae", "vq-vae", "hvae", "vdvae"]
IMAGE = (1, 8, 8)


def tiny(name: str) -> vaezoo.VAE:
    torch.manual_seed(0)
    return vaezoo.create_model(name, preset="tiny", input_shape=IMAGE).eval()


def labels_for(model: vaezoo.VAE, n: int) -> torch.Tensor | None:
    return torch.arange(n) % model.config.num_classes if model.is_conditional else None


# --- dtypes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", BUILT_IN)
def test_a_half_precision_model_samples_encodes_decodes_and_scores(name: str, dtype: torch.dtype) -> None:
    model = tiny(name)
    x = torch.rand(4, *IMAGE)
    y = labels_for(model, 4)
    half = tiny(name).to(dtype)
    samples = half.sample(4, y=y)
    assert samples.dtype == dtype and samples.shape == (4, *IMAGE) and bool(torch.isfinite(samples).all())
    assert half.decode(half.prior_sample(4), y).dtype == dtype  # the prior's noise is drawn in the model's dtype
    half.encode(x, y)  # a float32 batch meets a half-precision encoder
    out, reference = half(x, y), model(x, y)
    assert out.neg_elbo.dtype == torch.float32  # nats are summed in float32
    assert torch.allclose(out.recon, reference.recon, rtol=0.02), (out.recon, reference.recon)
    if model.has_log_likelihood:
        torch.manual_seed(1)
        half_nll = half.log_likelihood(x, y, iw_samples=5)
        torch.manual_seed(1)
        full_nll = model.log_likelihood(x, y, iw_samples=5)
        # Monte Carlo with k=5 on an untrained model: the rounding of z moves the estimate by a few percent
        assert half_nll.dtype == torch.float32 and torch.allclose(half_nll, full_nll, rtol=0.05), (half_nll, full_nll)


def test_a_bfloat16_pretrained_model_scores_the_digits_as_float32_does(digits_splits) -> None:
    x = digits_splits.test.x[:200]
    model = vaezoo.from_pretrained("vae-mlp.digits")
    half = vaezoo.from_pretrained("vae-mlp.digits").to(torch.bfloat16)
    torch.manual_seed(0)
    full_nll = float(model.log_likelihood(x, iw_samples=20).mean())
    torch.manual_seed(0)
    half_nll = float(half.log_likelihood(x, iw_samples=20).mean())
    assert abs(half_nll - full_nll) < 0.1, (half_nll, full_nll)  # nats per example


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_inputs_in_another_float_dtype_are_cast_to_the_model_s(dtype: torch.dtype) -> None:
    model = tiny("vae-mlp")
    x = torch.rand(3, *IMAGE).to(dtype).float()  # values the other dtype can hold exactly
    torch.manual_seed(0)
    expected = model(x).neg_elbo
    torch.manual_seed(0)
    assert torch.allclose(model(x.to(dtype)).neg_elbo.float(), expected, atol=1e-4)
    assert torch.allclose(model.encode(x.to(dtype)).mean, model.encode(x).mean, atol=1e-5)
    assert torch.allclose(model.reconstruct(x.to(dtype)), model.reconstruct(x), atol=1e-5)
    assert torch.allclose(apps.reconstruct(model, x.to(dtype)), model.reconstruct(x), atol=1e-5)
    torch.manual_seed(0)
    expected = model.log_likelihood(x, iw_samples=4)
    torch.manual_seed(0)
    assert torch.allclose(model.log_likelihood(x.to(dtype), iw_samples=4).float(), expected, atol=1e-4)


# --- batches, counts, temperatures, labels --------------------------------------------------------
def test_an_empty_batch_gives_empty_results_or_says_why_it_cannot() -> None:
    model, empty = tiny("vae-mlp"), torch.rand(0, *IMAGE)
    with pytest.raises(vaezoo.InputError, match=r"x holds 0 examples \(shape \(0, 1, 8, 8\)\); vae-mlp needs at least one"):
        model(empty)
    assert model.reconstruct(empty).shape == (0, *IMAGE)
    assert model.log_likelihood(empty, iw_samples=3).shape == (0,)
    assert apps.reconstruct(model, empty).shape == (0, *IMAGE)
    assert apps.anomaly_scores(model, empty).shape == (0,)
    assert apps.nll_scores(model, empty, iw_samples=2).shape == (0,)
    with pytest.raises(vaezoo.InputError, match="x holds 0 examples but a latent map needs at least 1"):
        apps.latent_map(model, empty)
    with pytest.raises(vaezoo.InputError, match="x holds 0 examples but a latent traversal needs at least 1"):
        apps.traverse(model, empty)


@pytest.mark.parametrize("n", [-1, 0, 2.5, True, "3", None])
def test_sample_refuses_a_count_that_is_not_a_positive_integer(n) -> None:
    with pytest.raises(vaezoo.InputError, match=f"n={n!r} must be a positive integer"):
        tiny("vae-mlp").sample(n)


def test_numpy_integers_count_as_integers() -> None:
    model = tiny("vae-mlp")
    assert model.sample(np.int64(3)).shape == (3, *IMAGE)
    assert model.log_likelihood(torch.rand(2, *IMAGE), iw_samples=np.int32(2)).shape == (2,)


@pytest.mark.parametrize("temperature", [math.nan, math.inf, -1.0, "hot"])
def test_sample_refuses_a_temperature_that_is_not_a_finite_number_at_least_zero(temperature) -> None:
    with pytest.raises(vaezoo.InputError, match=f"temperature={temperature!r} must be a finite number >= 0"):
        tiny("vae-mlp").sample(2, temperature=temperature)


def test_temperature_zero_samples_the_prior_s_mode() -> None:
    model = tiny("vae-mlp")
    assert torch.equal(model.sample(2, temperature=0.0), model.likelihood.mean(model.decode(torch.zeros(2, 4))))


def test_log_likelihood_refuses_fractional_sample_counts_under_either_name() -> None:
    model, x = tiny("vae-mlp"), torch.rand(2, *IMAGE)
    with pytest.raises(vaezoo.InputError, match="iw_samples=1.5 must be a positive integer"):
        model.log_likelihood(x, iw_samples=1.5)
    with pytest.warns(DeprecationWarning), pytest.raises(vaezoo.InputError, match="iw_samples=1.5 must be"):
        model.log_likelihood(x, k=1.5)
    with pytest.raises(vaezoo.InputError, match="chunk_size=0 must be a positive integer"):
        model.log_likelihood(x, chunk_size=0)


def test_labels_given_to_an_unconditional_model_s_sample_are_refused() -> None:
    with pytest.raises(vaezoo.InputError, match=r"vae-mlp is not conditional, so sample takes no labels \(y=3\)"):
        tiny("vae-mlp").sample(2, y=3)


@pytest.mark.parametrize("call", ["sample", "encode", "decode", "forward"])
def test_cvae_refuses_float_labels_wherever_they_go(call: str) -> None:
    model, y = tiny("cvae"), torch.tensor([1.5, 2.0])
    calls = {"sample": lambda: model.sample(2, y=y), "encode": lambda: model.encode(torch.rand(2, *IMAGE), y),
             "decode": lambda: model.decode(torch.zeros(2, 4), y), "forward": lambda: model(torch.rand(2, *IMAGE), y)}
    with pytest.raises(vaezoo.InputError, match="y has dtype torch.float32; pass integer class labels"):
        calls[call]()


def test_cvae_refuses_labels_out_of_range_and_takes_one_int_for_a_batch() -> None:
    model = tiny("cvae")
    with pytest.raises(vaezoo.InputError, match=r"labels y hold 10\.\.12; this model knows 0\.\.9 \(cvae\)"):
        model.encode(torch.rand(2, *IMAGE), torch.tensor([10, 12]))
    with pytest.raises(vaezoo.InputError, match=r"label y=18446744073709551616 is out of range: cvae knows labels 0\.\.9"):
        model.decode(torch.zeros(1, 4), 2**64)
    with pytest.raises(vaezoo.InputError, match=r"y has shape \(3,\); pass one label per example, shape \(2,\)"):
        model.encode(torch.rand(2, *IMAGE), torch.tensor([1, 2, 3]))
    assert torch.equal(model.decode(torch.zeros(2, 4), 3), model.decode(torch.zeros(2, 4), torch.tensor([3, 3])))


def test_a_batch_on_another_device_is_named_with_the_fix() -> None:
    model = tiny("vae-mlp").to("meta")
    with pytest.raises(vaezoo.InputError, match=r"x is on cpu but the model is on meta; move it with x.to\(model.device\)"):
        model.reconstruct(torch.rand(2, *IMAGE))


# --- applications ---------------------------------------------------------------------------------
def test_a_latent_map_of_one_example_is_the_origin_and_of_two_a_line() -> None:
    model, x = tiny("vae-mlp"), torch.rand(2, *IMAGE)
    assert np.array_equal(apps.latent_map(model, x[:1]), np.zeros((1, 2)))
    points = apps.latent_map(model, x)
    assert points.shape == (2, 2) and np.allclose(points[0], -points[1], atol=1e-5)  # PCA centres the pair


@pytest.mark.parametrize("span", [math.nan, math.inf, 0.0, -3.0])
def test_a_traversal_refuses_a_span_that_would_draw_nothing_or_nan(span: float) -> None:
    with pytest.raises(vaezoo.InputError, match="span=.* must be a number > 0"):
        apps.traverse(tiny("vae-mlp"), torch.rand(4, *IMAGE), span=span)


def test_a_traversal_refuses_latent_indices_that_are_not_integers() -> None:
    with pytest.raises(vaezoo.InputError, match=r"dims\[0\]=1.5 must be an integer >= 0 \(a latent index\)"):
        apps.traverse(tiny("vae-mlp"), torch.rand(4, *IMAGE), dims=[1.5])


def test_an_interpolation_end_must_be_one_example() -> None:
    with pytest.raises(vaezoo.InputError, match="x_from holds 3 examples; an interpolation runs between two examples"):
        apps.interpolate(tiny("vae-mlp"), torch.rand(3, *IMAGE), torch.rand(*IMAGE))


def test_a_long_interpolation_is_decoded_in_batches_with_the_same_result() -> None:
    model, ends = tiny("vae-mlp"), torch.rand(2, *IMAGE)
    path = apps.interpolate(model, ends[0], ends[1], steps=apps.BATCH_SIZE + 7)
    z = model.encode(ends).mean
    t = torch.linspace(0, 1, apps.BATCH_SIZE + 7)
    assert torch.allclose(path, model.likelihood.mean(model.decode(apps.lerp(z[0], z[1], t))), atol=1e-6)


def test_latent_arithmetic_refuses_a_non_finite_scale() -> None:
    with pytest.raises(vaezoo.InputError, match="scale=nan must be a finite number"):
        apps.add_attribute(tiny("vae-mlp"), torch.rand(2, *IMAGE), torch.zeros(4), scale=math.nan)


# --- sizes, refused before any work ----------------------------------------------------------------
def refuse_work(monkeypatch, model: vaezoo.VAE) -> None:
    """Any sampling or decoding from here on fails the test: a size must be refused before it."""
    def fail(*args, **kwargs):
        raise AssertionError("work started before the size was checked")

    monkeypatch.setattr(model, "decode", fail)
    monkeypatch.setattr(model, "prior_sample", fail)


@pytest.mark.parametrize("make", [
    lambda model: model.sample(10**9),
    lambda model: apps.generate(model, 10**9),
    lambda model: apps.sample_labels(model, 10**9),
    lambda model: apps.augment(model, 10**8, per_class=True),
    lambda model: apps.interpolate(model, torch.rand(*IMAGE), torch.rand(*IMAGE), steps=10**8),
    lambda model: apps.traverse(model, torch.rand(4, *IMAGE), y=torch.arange(4), rows=2, steps=10**8),
], ids=["sample", "generate", "sample_labels", "augment", "interpolate", "traverse"])
def test_outputs_too_large_to_hold_are_refused_before_any_work(make, monkeypatch) -> None:
    model = tiny("cvae")
    refuse_work(monkeypatch, model)
    start = time.perf_counter()
    with pytest.raises(vaezoo.InputError, match=r"over the limit of 268,435,456 values \(1 GiB\) at once; ask for at most"):
        make(model)
    assert time.perf_counter() - start < 2


def test_a_config_too_large_to_build_is_refused_from_its_shapes_alone(monkeypatch) -> None:
    built = []
    monkeypatch.setattr(torch.nn.Linear, "reset_parameters", lambda self: built.append(self.weight.device.type))
    with pytest.raises(vaezoo.ConfigError, match=r"would hold 16,660,000,848 parameters .* the largest, "
                                                 r"encoder.net.0.weight, has shape \(10000000, 784\)\), over vaezoo's limit"):
        vaezoo.create_model("vae-mlp", hidden_dims=(10**7,))
    assert set(built) == {"meta"}  # counted on the meta device; nothing was allocated or initialised
    assert MAX_PARAMETERS == 2**31


def test_a_model_folder_is_checked_against_its_weights_header_before_the_model_is_built(tmp_path, monkeypatch) -> None:
    vaezoo.create_model("vae-mlp", preset="tiny", input_shape=IMAGE).save_pretrained(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    config["config"]["hidden_dims"] = [4 * 10**6]  # ~1.5 GB of weights, were they built: under the parameter limit
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    built = []
    monkeypatch.setattr(torch.nn.Linear, "reset_parameters", lambda self: built.append(self.weight.device.type))
    with pytest.raises(vaezoo.CheckpointError, match=r"do not fit VanillaVAE: shape mismatches encoder.net.0.weight "
                                                     r"\(32, 64\) vs model \(4000000, 64\)"):
        vaezoo.from_pretrained(str(tmp_path / "model"))
    assert set(built) == {"meta"}


def test_a_timm_encoder_with_a_fixed_input_size_is_refused_at_build_time_naming_both_sizes() -> None:
    pytest.importorskip("timm")
    with pytest.raises(vaezoo.ConfigError, match=r"encoder='timm:vit_tiny_patch16_224' cannot take input_shape=\(3, 32, 32\) "
                                                 r"\(Input height \(32\) doesn't match model \(224\).*use images of 224x224 pixels "
                                                 r"\(input_shape=\(3, 224, 224\)\)"):
        vaezoo.create_model("vae-mlp", encoder="timm:vit_tiny_patch16_224", input_shape=(3, 32, 32))


# --- the scaffold and resuming ---------------------------------------------------------------------
def test_a_plugin_name_past_the_length_limit_is_refused_before_anything_is_written(tmp_path) -> None:
    with pytest.raises(vaezoo.ConfigError, match="has 300 characters; use at most 64"):
        new_plugin("a" * 300, tmp_path / "out" / "p")
    assert list(tmp_path.iterdir()) == []


def test_a_scaffold_that_fails_part_way_leaves_nothing_behind(tmp_path, monkeypatch) -> None:
    writes = []

    def write_until_the_disk_is_full(self: Path, text: str, **kwargs) -> int:
        writes.append(self)
        if len(writes) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, text, **kwargs)

    original = Path.write_text
    monkeypatch.setattr(Path, "write_text", write_until_the_disk_is_full)
    with pytest.raises(vaezoo.StorageError, match=r"cannot write the plugin package to .*the disk is full.*nothing was left"):
        new_plugin("fresh-vae", tmp_path / "new" / "fresh")
    assert len(writes) == 3 and list(tmp_path.iterdir()) == []  # no package, no staging folder, no parent made for it
    (tmp_path / "empty").mkdir()
    monkeypatch.undo()
    plugin = new_plugin("fresh-vae", tmp_path / "empty")  # an existing empty folder is filled
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"] and all(p.is_file() for p in plugin.files)


def test_resume_accepts_the_run_s_checkpoints_folder_and_refuses_a_new_run_inside_a_run(tmp_path) -> None:
    run = tmp_path / "run"
    train_run("vae-mlp", "digits", run, train_flags={"epochs": 1}, progress=False)
    result = train_run("vae-mlp", "digits", run / "checkpoints", resume=True, train_flags={"epochs": 2}, progress=False)
    assert Path(result.out_dir) == run
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    with pytest.raises(vaezoo.ConfigError, match=rf"--out {run}/checkpoints is inside the run folder {run}; continue that "
                                                 rf"run with --resume --out {run}"):
        train_run("vae-mlp", "digits", run / "checkpoints", train_flags={"epochs": 1}, progress=False)
    with pytest.raises(vaezoo.ConfigError, match=r"--resume continues a run from its latest checkpoint .*: pass --out"):
        train_run("vae-mlp", "digits", run / "model.safetensors", resume=True, progress=False)
