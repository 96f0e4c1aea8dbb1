"""Behaviour and math of the VAE with an inverse autoregressive flow posterior (plugins/iaf_vae.py): MADE's masks,
the flow's log-determinant and density against autograd Jacobians and a grid integral, the Gaussian case
against vae-mlp, the importance-weighted bound, training, config errors and the conformance suite.

    OMP_NUM_THREADS=1 python -m pytest tests/test_iaf_vae.py -q
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch.autograd.functional import jacobian
from torch.distributions import Normal

import vaezoo
from vaezoo import apps
from vaezoo.core.contract import Posterior
from vaezoo.core.distributions import DiagonalGaussian
from vaezoo.data import load_data
from vaezoo.errors import CapabilityError, ConfigError
from vaezoo.eval.evaluate import evaluate
from vaezoo.testing import check_model
from vaezoo.zoo.registry import REGISTRY, register_model
from vaezoo_plugins.iaf_vae import IAFVAE, MADE, IAFPosterior, IAFVAEConfig, InverseAutoregressiveFlow

IMAGE, VECTOR = (1, 8, 8), (64,)


@pytest.fixture(scope="module", autouse=True)
def registered() -> Iterator[None]:
    """"iaf-vae" in the registry for this module, until pyproject.toml's entry point registers it."""
    if "iaf-vae" in vaezoo.list_models():
        yield
        return
    register_model(IAFVAE, "iaf-vae")
    yield
    REGISTRY.entries.pop("iaf-vae", None)  # leave the registry as the other test modules found it


@pytest.fixture(autouse=True)
def seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def digits() -> vaezoo.data.DataSplits:
    return load_data("digits")


@pytest.fixture(scope="module")
def trained(digits) -> tuple[IAFVAE, float, float, list[float]]:
    """The tiny model after 5 epochs on digits: (model, val -ELBO before, after, training losses per epoch)."""
    torch.manual_seed(0)
    model = tiny()
    before = evaluate(model, digits.val.x)["neg_elbo"]
    result = vaezoo.train(model, digits, epochs=5, batch_size=64, lr=3e-3, progress=False, seed=0)
    after = evaluate(model, digits.val.x)["neg_elbo"]
    return model.eval(), before, after, [record["train"]["loss"] for record in result.history]


def tiny(input_shape: tuple[int, ...] = IMAGE, **overrides) -> IAFVAE:
    return vaezoo.create_model("iaf-vae", preset="tiny", input_shape=input_shape, **overrides)


def scramble(module: torch.nn.Module, std: float = 0.5) -> None:
    """Weights far from the near-identity init, so that the flow bends space and the checks have teeth."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0.0, std)


# --- MADE and the flow -------------------------------------------------------------------------
@pytest.mark.parametrize("reverse", [False, True])
def test_made_outputs_depend_only_on_the_dims_before_them_in_its_order(reverse: bool) -> None:
    dim, context_features = 5, 3
    made = MADE(dim, hidden=20, context_features=context_features, reverse=reverse).double()
    scramble(made)
    z, context = torch.randn(dim, dtype=torch.float64), torch.randn(context_features, dtype=torch.float64)
    jac_z = jacobian(lambda z: torch.cat(made(z[None], context[None]), 1)[0], z)  # (2D, D): rows m then s
    jac_context = jacobian(lambda h: torch.cat(made(z[None], h[None]), 1)[0], context)  # (2D, F)
    order = torch.arange(dim).flip(0) if reverse else torch.arange(dim)  # order[k]: the dim k-th in line
    for jac in (jac_z[:dim], jac_z[dim:]):
        in_order = jac[order][:, order]  # rows (outputs) and columns (inputs) in the autoregressive order
        assert torch.equal(in_order.triu(), torch.zeros(dim, dim, dtype=torch.float64)), "must be strictly lower-triangular"
        below = in_order[torch.tril_indices(dim, dim, -1).unbind()]
        assert (below.abs() > 1e-8).all(), "every earlier dim should reach every later output"
    assert (jac_context.abs() > 1e-8).all(), "the context h reaches every output, the first dim's included"


def test_the_flows_log_det_is_the_log_abs_det_of_its_full_jacobian() -> None:
    dim, context_features = 4, 3
    flow = InverseAutoregressiveFlow(dim, steps=3, hidden=16, context_features=context_features).double()
    scramble(flow)
    context = torch.randn(context_features, dtype=torch.float64)
    for _ in range(3):
        z0 = 2 * torch.randn(dim, dtype=torch.float64)
        jac = jacobian(lambda z: flow(z[None], context[None]).z[0], z0)  # (D, D) = dz_T / dz_0
        torch.testing.assert_close(flow(z0[None], context[None]).log_det[0], torch.linalg.slogdet(jac).logabsdet)
    # The order is reversed between steps, so after two steps every dim depends on every other one.
    two_steps = InverseAutoregressiveFlow(dim, steps=2, hidden=16, context_features=context_features).double()
    scramble(two_steps)
    jac = jacobian(lambda z: two_steps(z[None], context[None]).z[0], z0)
    assert (jac.abs() > 1e-8).all()
    # One step alone: dz_1/dz_0 is lower-triangular with sigma_1 = sigmoid(s_1) on its diagonal (IAF section 4).
    one_step = InverseAutoregressiveFlow(dim, steps=1, hidden=16, context_features=context_features).double()
    scramble(one_step)
    jac = jacobian(lambda z: one_step(z[None], context[None]).z[0], z0)
    _, gate_logit = one_step.steps[0](z0[None], context[None])
    assert torch.equal(jac.triu(1), torch.zeros(dim, dim, dtype=torch.float64))
    torch.testing.assert_close(jac.diagonal(), torch.sigmoid(gate_logit[0]))


def test_log_prob_inverts_the_flow_at_any_z_and_matches_the_change_of_variables() -> None:
    model = tiny(latent_dim=3).double().eval()
    scramble(model.flow, std=0.3)
    x = torch.rand(5, *IMAGE, dtype=torch.float64)
    posterior = model.encode(x)
    z, log_q, _ = posterior.rsample_with_log_prob()
    torch.testing.assert_close(posterior.log_prob(z), log_q)  # the inverse reproduces the sampling path
    # Not drawn from this q: from the posterior of other inputs, as the state of an MWG chain is.
    z_elsewhere = model.encode(torch.rand(5, *IMAGE, dtype=torch.float64)).rsample()
    z0, _ = model.flow.inverse(z_elsewhere, posterior.context)
    torch.testing.assert_close(model.flow(z0, posterior.context).z, z_elsewhere)
    for i in range(5):
        # log q(z) = log N(z_0; mu, sigma^2) - log|det dz/dz_0|, with the determinant from autograd.
        context = posterior.context[i:i + 1]
        jac = jacobian(lambda v, context=context: model.flow(v[None], context).z[0], z0[i])
        base = Normal(posterior.base.mean[i], posterior.base.std[i]).log_prob(z0[i]).sum()
        torch.testing.assert_close(posterior.log_prob(z_elsewhere)[i], base - torch.linalg.slogdet(jac).logabsdet)
    far_out = posterior.log_prob(1e6 * torch.randn(5, 3, dtype=torch.float64))  # z_0 overflows: -inf, not NaN
    assert not far_out.isnan().any() and (far_out < -1e3).all()


def test_the_density_integrates_to_one_and_agrees_with_the_samples_in_2d() -> None:
    model = tiny(latent_dim=2).double().eval()
    scramble(model.flow)
    posterior = model.encode(torch.rand(1, *IMAGE, dtype=torch.float64))
    step, half_width = 0.04, 12.0
    axis = torch.arange(-half_width, half_width + step / 2, step, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)  # (N, 2)
    n = grid.shape[0]
    spread = IAFPosterior(DiagonalGaussian(posterior.base.mean.expand(n, -1), posterior.base.logvar.expand(n, -1)),
                          posterior.context.expand(n, -1), model.flow)
    density = spread.log_prob(grid).exp() * step**2  # q(z) dA on each cell
    assert abs(float(density.sum().detach()) - 1.0) < 5e-3
    samples = spread.rsample()  # (N, 2): N independent draws from q
    grid_mean = (density[:, None] * grid).sum(0)
    standard_error = samples.std(0) / math.sqrt(samples.shape[0])
    assert ((grid_mean - samples.mean(0)).abs() < 5 * standard_error + 1e-3).all()
    assert samples.abs().max() < half_width, "the grid must cover the mass"


def test_each_step_starts_as_a_small_change_of_z() -> None:
    """s_t starts near the forget-gate bias +2 (IAF section 4): sigma_t ~ sigmoid(2) ~ 0.88 on every dim."""
    model = tiny(flow_steps=3).eval()
    posterior = model.encode(torch.rand(16, *IMAGE))
    z = posterior.base.rsample()
    for made in model.flow.steps:
        shift, gate_logit = made(z, posterior.context)
        assert (gate_logit - 2.0).abs().max() < 0.5 and shift.abs().max() < 0.5
        z = torch.sigmoid(gate_logit) * z + (1 - torch.sigmoid(gate_logit)) * shift


# --- the posterior and the Gaussian case -------------------------------------------------------------
def test_encode_gives_a_non_gaussian_posterior_whose_code_is_the_flowed_mean() -> None:
    model = tiny().eval()
    x = torch.rand(4, *IMAGE)
    posterior = model.encode(x)
    assert isinstance(posterior, Posterior) and posterior.layers == [posterior]
    assert posterior.is_gaussian is False
    torch.testing.assert_close(posterior.mean, model.flow(posterior.base.mean, posterior.context).z)
    torch.testing.assert_close(posterior.rsample(temperature=0.0), posterior.mean)
    torch.testing.assert_close(model.encode_mean(x), posterior.mean)
    with pytest.raises(CapabilityError, match="Gaussian posterior"):  # slerp needs a Gaussian q; lerp works
        apps.interpolate(model, x[0], x[1], steps=3, method="slerp")
    assert apps.interpolate(model, x[0], x[1], steps=3, method="lerp").shape == (3, *IMAGE)


def test_with_no_flow_step_it_is_vae_mlp_and_the_monte_carlo_kl_averages_to_the_analytic_one(digits) -> None:
    iaf = tiny(flow_steps=0).eval()
    vanilla = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=IMAGE).eval()
    vanilla.load_state_dict(iaf.state_dict())  # strict: the same encoder, posterior head and decoder
    x = digits.test.x[:8]
    posterior, gaussian = iaf.encode(x), vanilla.encode(x)
    assert posterior.is_gaussian
    torch.testing.assert_close(posterior.mean, gaussian.mean)
    z = torch.randn(8, 4)
    torch.testing.assert_close(posterior.log_prob(z), Normal(gaussian.mean, gaussian.std).log_prob(z).sum(1))
    draws = torch.stack([posterior.kl() for _ in range(4000)])  # (4000, 8)
    standard_error = draws.std(0) / math.sqrt(draws.shape[0])
    assert ((draws.mean(0) - gaussian.kl()).abs() < 5 * standard_error).all()
    torch.manual_seed(3)
    out_iaf = iaf(x)
    torch.manual_seed(3)  # the same noise: both draw z = mu + sigma * eps once
    out_vanilla = vanilla(x)
    torch.testing.assert_close(out_iaf.params, out_vanilla.params)
    torch.testing.assert_close(out_iaf.recon, out_vanilla.recon)
    assert float(out_iaf.metrics["flow_log_det"]) == 0.0


# --- the objective and the likelihood bound ----------------------------------------------------------
def test_neg_elbo_is_recon_plus_the_kl_estimate_at_the_decoded_sample() -> None:
    model = tiny().eval()
    scramble(model.flow, std=0.2)
    x = torch.rand(6, *IMAGE)
    torch.manual_seed(1)
    out = model(x)
    torch.manual_seed(1)  # the same noise: forward draws exactly one z_0
    z, log_q, log_det = model.encode(x).rsample_with_log_prob()
    recon = -torch.distributions.Bernoulli(logits=model.decode(z), validate_args=False).log_prob(x).flatten(1).sum(1)
    kl = log_q - Normal(0.0, 1.0).log_prob(z).sum(1)
    torch.testing.assert_close(out.neg_elbo, recon + kl)
    torch.testing.assert_close(out.metrics["flow_log_det"], log_det.mean())
    torch.manual_seed(1)  # importance_sample draws the same z: its weight is the -ELBO's sample, sign flipped
    torch.testing.assert_close(model.log_weights(x), -out.neg_elbo)


def test_log_likelihood_lies_above_the_elbo_and_rises_with_iw_samples(trained, digits) -> None:
    """Burda et al. 2016, theorem 1, with the exact flow density in the weights. Measured on this model over 5
    seeds: ELBO -29.26 +- 0.02, k = 5: -29.07 +- 0.01, k = 50: -29.00 +- 0.01, k = 500: -28.98 +- 0.01."""
    model = trained[0]
    x = digits.test.x  # all 180
    with torch.no_grad():
        elbo = float(-torch.stack([model(x).neg_elbo for _ in range(20)]).mean())
    bounds = {k: float(model.log_likelihood(x, iw_samples=k).mean()) for k in (1, 5, 100)}
    assert abs(bounds[1] - elbo) < 0.3  # k = 1 is the ELBO, up to sampling noise
    assert elbo < bounds[5] < bounds[100]


def test_a_short_training_run_on_digits_lowers_the_loss(trained) -> None:
    model, before, after, losses = trained
    assert after < 0.9 * before, f"validation -ELBO {before:.2f} -> {after:.2f}"
    assert losses[-1] < losses[0]
    assert float(evaluate(model, torch.rand(8, *IMAGE))["flow_log_det"]) < 0  # the steps do act on z


def test_metropolis_within_gibbs_fills_only_the_hidden_values(trained, digits) -> None:
    model = trained[0]
    x = digits.test.x[:4]
    mask = apps.bottom_half_mask(IMAGE)
    filled = apps.impute(model, x, mask, method="mwg", iterations=8, seed=0)
    hidden = mask.expand_as(x)
    assert torch.equal(filled[~hidden], x[~hidden])
    assert torch.isfinite(filled).all() and 0 <= float(filled.min()) <= float(filled.max()) <= 1


# --- config and conformance ---------------------------------------------------------------------------
@pytest.mark.parametrize(("overrides", "fragment"), [
    ({"flow_steps": -1}, "flow_steps=-1"),
    ({"flow_steps": 1.5}, "flow_steps=1.5"),
    ({"flow_steps": True}, "flow_steps=True"),
    ({"flow_hidden": 0}, "flow_hidden=0"),
    ({"flow_hidden": "wide"}, "flow_hidden='wide'"),
    ({"beta": -1.0}, "beta=-1.0"),
    ({"flow_step": 2}, "did you mean 'flow_steps'"),
])
def test_bad_fields_are_config_errors_naming_them(overrides: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        tiny(**overrides)


def test_the_config_class_checks_fields_when_built_directly() -> None:
    with pytest.raises(ConfigError, match="flow_steps=-2 must be an integer >= 0"):
        IAFVAEConfig(flow_steps=-2)
    with pytest.raises(ConfigError, match="flow_hidden=0 must be a positive integer"):
        IAFVAEConfig(flow_hidden=0)
    assert IAFVAEConfig(flow_steps=0).flow_steps == 0


@pytest.mark.parametrize("input_shape", [IMAGE, VECTOR])
def test_one_latent_dim_and_vectors_work(input_shape: tuple[int, ...]) -> None:
    model = tiny(input_shape, latent_dim=1, flow_steps=3)
    out = model(torch.rand(3, *input_shape))
    out.loss.backward()
    assert torch.isfinite(out.neg_elbo).all() and model.log_likelihood(torch.rand(2, *input_shape), iw_samples=4).shape == (2,)


def test_check_model_passes() -> None:
    report = check_model(IAFVAE, quick=True)
    assert "log_likelihood" in report.passed and "save_load" in report.passed
