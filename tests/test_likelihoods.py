"""The discretized mixture of logistics (PixelCNN++, arXiv:1701.05517, eq. 2) and bits/dim in eval and bench.

The likelihood is checked against the math: its 256 bin masses sum to 1 for any parameters, a bin's mass
is the difference of two logistic CDFs (the tails at the edge bins), the observed mask marginalises,
and its mean and samples are those of the distribution it scores.
"""
from __future__ import annotations

import math

import pytest
import torch
from conftest import fit, mean_of

import vaezoo
from vaezoo.core.config import VAEConfig
from vaezoo.core.likelihoods import DiscretizedLogisticMixture, param_shape
from vaezoo.errors import ConfigError, InputError
from vaezoo.eval.evaluate import evaluate

BINS = torch.arange(256, dtype=torch.float64)


def _random_params(likelihood: DiscretizedLogisticMixture, n: int, spread: float) -> torch.Tensor:
    """(n, P, 1, 1) parameters: logits, means, log-scales and couplings scattered by ``spread``; the last rows
    put the means far outside [-1, 1] and the log-scales past both clamps."""
    params = torch.randn(n, likelihood.param_channels, 1, 1, dtype=torch.float64) * spread
    k, c = likelihood.components, likelihood.channels
    params[-1, k : k + c * k] = 9.0  # every mean far above the top bin
    params[-2, k : k + c * k] = -9.0  # and far below the bottom one
    params[-3, k + c * k : k + 2 * c * k] = -30.0  # log-scales far below the -7 floor
    params[-4, k + c * k : k + 2 * c * k] = 60.0  # and far above the cap
    return params


def _log_probs_over_values(likelihood, params: torch.Tensor, pixels: torch.Tensor, observed=None) -> torch.Tensor:
    """log P of each pixel value in ``pixels`` (V, C) under each row of params (n, P, 1, 1): (n, V)."""
    n, v = params.shape[0], pixels.shape[0]
    x = (pixels / 255).view(1, v, -1, 1, 1).expand(n, -1, -1, -1, -1).reshape(n * v, -1, 1, 1)
    mask = None if observed is None else observed.view(1, -1, 1, 1).expand_as(x)
    return likelihood.log_prob(params.repeat_interleave(v, 0), x, mask).view(n, v)


@pytest.mark.parametrize("components", [1, 5])
@pytest.mark.parametrize("spread", [1.0, 4.0, 20.0])
def test_the_256_values_of_a_grayscale_pixel_have_probabilities_summing_to_one(components, spread) -> None:
    likelihood = DiscretizedLogisticMixture(channels=1, components=components)
    log_probs = _log_probs_over_values(likelihood, _random_params(likelihood, 12, spread), BINS.view(256, 1))
    assert torch.isfinite(log_probs).all()
    torch.testing.assert_close(log_probs.exp().sum(1), torch.ones(12, dtype=torch.float64), atol=1e-9, rtol=0)


@pytest.mark.parametrize("spread", [1.0, 4.0, 20.0])
def test_the_256_cubed_values_of_an_rgb_pixel_have_probabilities_summing_to_one(spread) -> None:
    """By the chain rule over the channels, each sum taken over all 256 values of one channel:
    sum_B P(r, g, B) = P(r, g), sum_G P(r, G) = P(r) and sum_R P(R) = 1, for several r and g. Leaving
    the later channels out of ``observed`` gives P(r, g) and P(r) (checked here to be those sums)."""
    likelihood = DiscretizedLogisticMixture(channels=3, components=4)
    params = _random_params(likelihood, 8, spread)
    only = {c: torch.tensor([j <= c for j in range(3)]) for c in range(3)}  # channels 0..c observed
    p_red = _log_probs_over_values(likelihood, params, BINS.view(256, 1).expand(-1, 3), only[0]).exp()  # (8, 256)
    torch.testing.assert_close(p_red.sum(1), torch.ones(8, dtype=torch.float64), atol=1e-9, rtol=0)
    for red, green in [(0, 0), (7, 255), (128, 64), (255, 3)]:
        sweep = torch.stack([torch.full((256,), float(red)), BINS, torch.zeros(256, dtype=torch.float64)], 1)
        p_red_green = _log_probs_over_values(likelihood, params, sweep, only[1]).exp()  # (8, 256) over green
        torch.testing.assert_close(p_red_green.sum(1), p_red[:, red], atol=1e-9, rtol=1e-7)
        sweep = torch.stack([torch.full((256,), float(red)), torch.full((256,), float(green)), BINS], 1)
        p_all = _log_probs_over_values(likelihood, params, sweep).exp()  # (8, 256) over blue
        torch.testing.assert_close(p_all.sum(1), p_red_green[:, green], atol=1e-9, rtol=1e-7)


def _direct_log_prob(params: torch.Tensor, x: torch.Tensor, components: int) -> torch.Tensor:
    """The paper's formula written out pixel by pixel, with plain CDF differences (no log-space tricks)."""
    channels = x.shape[1]
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    cdf = torch.sigmoid
    for b in range(x.shape[0]):
        for h in range(x.shape[2]):
            for w in range(x.shape[3]):
                p = params[b, :, h, w]
                logits, rest = p[:components], p[components:]
                means = rest[: channels * components].view(channels, components)
                log_scales = rest[channels * components : 2 * channels * components].view(channels, components)
                coupling = torch.tanh(rest[2 * channels * components :].view(-1, components))
                values = (x[b, :, h, w] * 255).round() / 127.5 - 1
                pixel = 0.0
                for k in range(components):
                    prob, pair = torch.softmax(logits, 0)[k], 0
                    for c in range(channels):
                        mean = means[c, k]
                        for j in range(c):
                            mean = mean + coupling[pair, k] * values[j]
                            pair += 1
                        s = log_scales[c, k].clamp(-7, 7).exp()
                        upper = 1.0 if values[c] > 0.999 else cdf((values[c] + 1 / 255 - mean) / s)
                        lower = 0.0 if values[c] < -0.999 else cdf((values[c] - 1 / 255 - mean) / s)
                        prob = prob * (upper - lower)
                    pixel = pixel + prob
                total[b] += torch.log(pixel)
    return total


@pytest.mark.parametrize("channels", [1, 3])
def test_log_prob_is_the_per_bin_difference_of_logistic_cdfs(channels) -> None:
    likelihood = DiscretizedLogisticMixture(channels=channels, components=3)
    params = torch.randn(2, likelihood.param_channels, 2, 3, dtype=torch.float64)
    params[:, 3 + 3 * channels : 3 + 6 * channels] -= 2.0  # log-scales around -2: peaked but not degenerate
    x = torch.randint(0, 256, (2, channels, 2, 3)).double() / 255
    x[0, :, 0, 0], x[1, :, 1, 2] = 0.0, 1.0  # both edge bins appear
    torch.testing.assert_close(likelihood.log_prob(params, x), _direct_log_prob(params, x, 3))


def test_the_edge_bins_take_the_tails_and_inner_bins_do_not() -> None:
    """A logistic centred below the range puts almost all its mass in bin 0, exactly P(X < -1 + 1/255); bin 255
    likewise takes P(X > 1 - 1/255); an inner bin holds only its own width."""
    likelihood = DiscretizedLogisticMixture(channels=1, components=1)
    for mean, edge, tail in ((-3.0, 0, lambda s: torch.sigmoid((-1 + 1 / 255 + 3.0) / s)),
                             (3.0, 255, lambda s: 1 - torch.sigmoid((1 - 1 / 255 - 3.0) / s))):
        for log_scale in (-1.0, 0.0, 1.0):
            params = torch.tensor([0.0, mean, log_scale], dtype=torch.float64).view(1, 3, 1, 1)
            p_edge = likelihood.log_prob(params, torch.full((1, 1, 1, 1), edge / 255, dtype=torch.float64)).exp()
            torch.testing.assert_close(p_edge, tail(torch.tensor(log_scale, dtype=torch.float64).exp()).view(1))
    params = torch.tensor([0.0, -3.0, -1.0], dtype=torch.float64).view(1, 3, 1, 1)
    p_edge = likelihood.log_prob(params, torch.zeros(1, 1, 1, 1, dtype=torch.float64)).exp()
    p_next = likelihood.log_prob(params, torch.full((1, 1, 1, 1), 1 / 255, dtype=torch.float64)).exp()
    assert p_edge > 0.99 and p_next < 1e-3  # the tail beyond -1 went to bin 0, not spread over its neighbours


def test_values_between_bins_count_as_the_nearest_bin() -> None:
    likelihood = DiscretizedLogisticMixture(channels=1, components=2)
    params = torch.randn(4, likelihood.param_channels, 3, 3)
    x = torch.randint(0, 256, (4, 1, 3, 3)).float() / 255
    torch.testing.assert_close(likelihood.log_prob(params, x + 0.4 / 255), likelihood.log_prob(params, x))


def test_observed_mask_sums_over_the_observed_values_only() -> None:
    likelihood = DiscretizedLogisticMixture(channels=1, components=3)
    params = torch.randn(4, likelihood.param_channels, 6, 5)
    x = torch.rand(4, 1, 6, 5)
    top = torch.zeros(1, 1, 6, 5, dtype=torch.bool)
    top[..., :2, :] = True  # broadcast over the batch, as imputation passes it
    torch.testing.assert_close(likelihood.log_prob(params, x, top), likelihood.log_prob(params[..., :2, :], x[..., :2, :]))
    torch.testing.assert_close(likelihood.log_prob(params, x, torch.ones_like(x, dtype=torch.bool)),
                               likelihood.log_prob(params, x))
    assert torch.equal(likelihood.log_prob(params, x, torch.zeros_like(x, dtype=torch.bool)), torch.zeros(4))


@pytest.mark.parametrize("channels", [1, 3])
def test_mean_and_samples_lie_on_0_1_and_agree_with_the_distribution(channels) -> None:
    likelihood = DiscretizedLogisticMixture(channels=channels, components=3)
    params = _random_params(likelihood, 6, 3.0).float()
    mean, samples = likelihood.mean(params), likelihood.sample(params)
    for value in (mean, samples):
        assert value.shape == (6, channels, 1, 1) and value.dtype == torch.float32
        assert 0 <= value.min() and value.max() <= 1
    assert torch.equal(samples * 255, (samples * 255).round())  # samples are 8-bit values
    many = likelihood.sample(params[:2].repeat_interleave(20_000, 0)).view(2, 20_000, channels)
    torch.testing.assert_close(many.mean(1), mean[:2].view(2, channels), atol=0.02 if channels == 3 else 0.01, rtol=0)
    if channels == 1:  # the histogram of the draws is the distribution log_prob scores
        expected = _log_probs_over_values(likelihood, params[:2].double(), BINS.view(256, 1)).exp()
        counts = torch.stack([torch.bincount((many[i, :, 0] * 255).round().long(), minlength=256) for i in range(2)])
        sigma = (expected * (1 - expected) / 20_000).sqrt()
        assert ((counts / 20_000 - expected).abs() <= 5 * sigma + 1 / 20_000).all()  # each bin within 5 sigma


def test_half_precision_params_are_scored_in_float32() -> None:
    likelihood = DiscretizedLogisticMixture(channels=1, components=2)
    params, x = torch.randn(3, 6, 4, 4), torch.rand(3, 1, 4, 4)
    torch.testing.assert_close(likelihood.log_prob(params.bfloat16(), x), likelihood.log_prob(params.bfloat16().float(), x))
    assert likelihood.sample(params.bfloat16()).dtype == torch.bfloat16


def test_params_of_the_wrong_width_are_one_line_errors() -> None:
    likelihood = DiscretizedLogisticMixture(channels=3, components=10)
    with pytest.raises(InputError, match=r"takes \(B, 100, H, W\).*param_shape") as error:
        likelihood.log_prob(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4))
    assert "\n" not in str(error.value)


def test_param_shape_and_config_checks() -> None:
    assert param_shape(VAEConfig(input_shape=(3, 32, 32), likelihood="logistic_mixture")) == (100, 32, 32)  # PixelCNN++
    assert param_shape(VAEConfig(input_shape=(1, 28, 28), likelihood="logistic_mixture", mixture_components=5)) == (15, 28, 28)
    assert param_shape(VAEConfig(input_shape=(1, 28, 28))) == (1, 28, 28)
    for overrides, fragment in (({"input_shape": (64,)}, "use likelihood='gaussian' for vectors"),
                                ({"mixture_components": 0}, "mixture_components=0 must be a positive integer"),
                                ({"mixture_components": 300}, "use at most 256"),
                                ({"likelihood": "logistic_mixtur"}, "did you mean 'logistic_mixture'")):
        with pytest.raises(ConfigError, match=fragment) as error:
            VAEConfig(**{"input_shape": (1, 8, 8), "likelihood": "logistic_mixture", **overrides})
        assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["vae-mlp", "beta-vae", "cvae", "hvae", "vq-vae", "vdvae"])
@pytest.mark.parametrize("input_shape", [(1, 8, 8), (3, 8, 8)])
def test_every_variant_decodes_the_mixtures_parameters(name, input_shape, one_thread) -> None:
    model = vaezoo.create_model(name, preset="tiny", input_shape=input_shape, likelihood="logistic_mixture",
                                mixture_components=2)
    x = torch.randint(0, 256, (4, *input_shape)).float() / 255
    y = torch.arange(4) % model.config.num_classes if model.is_conditional else None
    out = model(x, y)
    assert out.params.shape == (4, 2 * (1 + 2 * input_shape[0] + (3 if input_shape[0] == 3 else 0)), 8, 8)
    assert torch.isfinite(out.neg_elbo).all() and (out.neg_elbo > 0).all()
    out.loss.backward()
    samples = model.eval().sample(3, y=y[:3] if y is not None else None)
    assert samples.shape == (3, *input_shape) and 0 <= samples.min() and samples.max() <= 1


def test_a_short_run_on_digits_lowers_the_loss(digits, one_thread) -> None:
    x, _ = digits
    model = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(1, 8, 8), likelihood="logistic_mixture",
                                mixture_components=3, encoder="mlp", decoder="mlp")
    losses = fit(model, x, None, steps=100, lr=1e-2, batch_size=64)["main"]
    assert mean_of(losses, last=True) < mean_of(losses, last=False) - 20  # nats per 64-pixel digit
    assert mean_of(losses, last=True) < 64 * math.log(256)  # better than a uniform guess over the 256 values


def _coin_flip_model(input_shape: tuple[int, ...]) -> vaezoo.VAE:
    """A vae-mlp whose decoder says p = 1/2 for every value and whose posterior is the prior: log p(x | z) is
    -ln 2 per value whatever z, and KL = 0, so the -ELBO and the NLL are exactly 1 bit per dimension."""
    model = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=input_shape, decoder="mlp")
    with torch.no_grad():
        for layer in (model.posterior_head.linear, model.decoder.net[-1]):
            layer.weight.zero_()
            layer.bias.zero_()
    return model


def test_eval_reports_bits_per_dim_for_images_only() -> None:
    metrics = evaluate(_coin_flip_model((1, 8, 8)), torch.rand(20, 1, 8, 8), iw_samples=4)
    assert metrics["neg_elbo"] == pytest.approx(64 * math.log(2), rel=1e-6)
    assert metrics["neg_elbo_bits_per_dim"] == pytest.approx(1.0, rel=1e-6)
    assert metrics["nll_bits_per_dim"] == pytest.approx(1.0, rel=1e-6)
    vectors = evaluate(_coin_flip_model((64,)), torch.rand(20, 64), iw_samples=4)
    assert "neg_elbo_bits_per_dim" not in vectors and "nll_bits_per_dim" not in vectors


def test_bits_per_dim_of_a_trained_mixture_model_is_its_nats_over_dims_ln2(digits) -> None:
    x, _ = digits
    model = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(1, 8, 8), likelihood="logistic_mixture")
    metrics = evaluate(model, x[:50], iw_samples=3)
    torch.manual_seed(0)  # evaluate's noise: one batch, seed 0
    neg_elbo = model.eval()(x[:50]).neg_elbo.detach().double()
    assert metrics["neg_elbo_bits_per_dim"] == pytest.approx(float((neg_elbo / 64).mean() * math.log2(math.e)), rel=1e-5)
    assert 0 < metrics["nll_bits_per_dim"] <= metrics["neg_elbo_bits_per_dim"] + 0.01


def test_bench_reports_bits_per_dim_and_says_what_they_measure(tmp_path, one_thread) -> None:
    from vaezoo.bench import run_benchmark

    results = run_benchmark(["vae-mlp"], "digits", pretrained=True, out_dir=str(tmp_path), iw_samples=5, iw_examples=20)
    record, notes = results["models"]["vae-mlp"], results["notes"]["vae-mlp"]
    assert record["neg_elbo_bits_per_dim"] == pytest.approx(record["neg_elbo"] / (64 * math.log(2)))
    assert record["nll_bits_per_dim"] == pytest.approx(record["nll"] / (64 * math.log(2)))
    assert "Bernoulli" in notes["neg_elbo_bits_per_dim"] and "not comparable" in notes["neg_elbo_bits_per_dim"]
    assert "neg_elbo_bits_per_dim" in (tmp_path / "results.md").read_text()
