"""Behaviour and math of FactorVAE (plugins/factor_vae.py) and of the parameter groups the shared trainer runs it with:
permute_dims, the TC estimate and both losses against hand computations, the gradient routing, gamma = 0 against
vae-mlp, training on digits, checkpoint and resume of both networks' optimiser state, and the likelihood bound.

    OMP_NUM_THREADS=1 python -m pytest tests/test_factor_vae.py -q
"""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vaezoo
from vaezoo.core.contract import ParamGroup, TrainingStage
from vaezoo.core.distributed import DistributedContext
from vaezoo.data import load_data
from vaezoo.errors import ConfigError, PluginError
from vaezoo.io.tensors import read_tensors
from vaezoo.testing import check_model
from vaezoo.training.config import TrainConfig
from vaezoo.training.loop import StageLoop, make_optimizer
from vaezoo.zoo.registry import register_model
from vaezoo_plugins.factor_vae import FactorVAE, FactorVAEConfig, permute_dims
from vaezoo_plugins.vae_mlp import VanillaVAE, VanillaVAEConfig

IMAGE = (1, 8, 8)
DIGITS_NETS = {"hidden_dims": (256,), "latent_dim": 8}  # the digits tags' networks: their codes are correlated early


@pytest.fixture(autouse=True)
def registered() -> None:
    """factor-vae is not in pyproject's entry points yet; conftest's _restore_registry undoes this after each test."""
    if "factor-vae" not in vaezoo.list_models():
        register_model(FactorVAE, "factor-vae")


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def tiny(**overrides) -> FactorVAE:
    return FactorVAE(FactorVAEConfig(**{**FactorVAE.presets["tiny"], "input_shape": IMAGE, **overrides}))


def hand_logits(model: FactorVAE, z: torch.Tensor) -> torch.Tensor:
    """logit D(z) written out: affine maps and leaky ReLU (slope 0.2) between them, (B, D) -> (B,)."""
    linears = [m for m in model.discriminator.modules() if isinstance(m, nn.Linear)]
    h = z
    for index, linear in enumerate(linears):
        h = h @ linear.weight.T + linear.bias
        if index < len(linears) - 1:
            h = torch.where(h > 0, h, 0.2 * h)
    return h[:, 0]


# --- permute_dims ----------------------------------------------------------------------------------------------
def test_permute_dims_keeps_each_column_and_breaks_the_joint() -> None:
    torch.manual_seed(1)
    s = torch.randn(500)
    z = torch.stack([s, s, -s, torch.randn(500)], dim=1)  # columns 0-2 perfectly (anti)correlated
    permuted = permute_dims(z)
    assert torch.equal(permuted.sort(0).values, z.sort(0).values)  # each column: the same multiset of values
    before, after = torch.corrcoef(z.T), torch.corrcoef(permuted.T)
    assert before[0, 1] == pytest.approx(1.0) and before[0, 2] == pytest.approx(-1.0)
    assert after[0, 1].abs() < 0.15 and after[0, 2].abs() < 0.15  # ~N(0, 1/500) for independent columns
    rows = {tuple(row.tolist()) for row in z}
    kept = sum(tuple(row.tolist()) in rows for row in permuted)
    assert kept < 10  # a row survives only if all four columns drew the same index: ~500 / 500^3
    assert not torch.equal(permuted[:, 0], permuted[:, 1])  # one permutation per column, not one for all


# --- the losses by hand ------------------------------------------------------------------------------------------
def test_tc_estimate_and_both_losses_match_a_hand_computation() -> None:
    model = tiny(discriminator_hidden_dims=(5, 3), gamma=2.5).train()
    x = load_data("digits").train.x[:9]  # odd: 5 true codes, 4 permuted ones
    torch.manual_seed(7)
    out = model(x)
    with torch.no_grad():  # the same draws: z ~ q(z | x), then the permuted half's uniforms (permute_dims)
        torch.manual_seed(7)
        posterior = model.encode(x)
        z = posterior.rsample()
        order = torch.rand(4, 4).argsort(0)
        pixel_logits = model.decode(z)  # Bernoulli log-density at x in [0, 1]: x log p + (1 - x) log(1 - p)
        recon = -(x * F.logsigmoid(pixel_logits) + (1 - x) * F.logsigmoid(-pixel_logits)).flatten(1).sum(1)
        logits = hand_logits(model, z)
        d = torch.sigmoid(logits)
        tc = torch.log(d / (1 - d)).mean()  # Kim and Mnih eq. 3: E[log D / (1 - D)]
        permuted_logits = hand_logits(model, z[5:].gather(0, order))
        d_loss = 0.5 * (-torch.log(torch.sigmoid(logits[:5])).mean() - torch.log(1 - torch.sigmoid(permuted_logits)).mean())
        accuracy = 0.5 * ((logits[:5] > 0).float().mean() + (permuted_logits < 0).float().mean())
    assert out.metrics["tc"] == pytest.approx(float(tc), abs=1e-5)
    assert out.terms["discriminator_loss"] == pytest.approx(float(d_loss), abs=1e-5)
    assert out.metrics["discriminator_accuracy"] == pytest.approx(float(accuracy))
    assert torch.allclose(out.neg_elbo.detach(), recon + posterior.kl(), atol=1e-4)
    assert float(out.loss.detach()) == pytest.approx(float((recon + posterior.kl()).mean() + 2.5 * tc), abs=1e-4)


def test_gamma_zero_is_vae_mlp_loss_and_gradient(digits) -> None:
    x = digits.train.x[:32]
    vae = VanillaVAE(VanillaVAEConfig(**VanillaVAE.presets["tiny"], input_shape=IMAGE)).train()
    factor = tiny(gamma=0.0).train()
    factor.load_state_dict({**factor.state_dict(), **vae.state_dict()})  # the same VAE weights, its own D
    outputs = []
    for model in (vae, factor):
        torch.manual_seed(3)
        out = model(x)
        model.zero_grad()
        out.loss.backward()
        outputs.append(out)
    assert torch.equal(outputs[0].loss, outputs[1].loss)
    assert torch.equal(outputs[0].neg_elbo, outputs[1].neg_elbo)
    factor_grads = dict(factor.named_parameters())
    for name, weight in vae.named_parameters():
        assert torch.allclose(weight.grad, factor_grads[name].grad, atol=1e-6), name
    # gamma > 0 adds gamma times the TC estimate to the same loss
    weighted = FactorVAE(FactorVAEConfig(**{**factor.config.__dict__, "gamma": 4.0})).train()
    weighted.load_state_dict(factor.state_dict())
    torch.manual_seed(3)
    with torch.no_grad():
        out = weighted(x)
    assert float(out.loss) == pytest.approx(float(outputs[0].loss.detach() + 4.0 * out.metrics["tc"]), abs=1e-4)


# --- gradient routing ------------------------------------------------------------------------------------------
def test_each_objective_reaches_only_its_own_network(digits) -> None:
    model = tiny(gamma=10.0).train()
    x = digits.train.x[:16]
    vae_params = {n: p for n, p in model.named_parameters() if not n.startswith("discriminator.")}
    d_params = {n: p for n, p in model.named_parameters() if n.startswith("discriminator.")}
    assert vae_params and d_params

    torch.manual_seed(0)
    parts = model.factor_losses(model.prepare_target(x))
    model.zero_grad()
    parts.vae_loss.backward(retain_graph=True)
    assert all(p.grad is None for p in d_params.values())  # the TC term sees D's weights detached
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in vae_params.items() if "encoder" in n)
    vae_grads = {n: p.grad.clone() for n, p in vae_params.items()}
    model.zero_grad()
    parts.discriminator_loss.backward()
    assert all(p.grad is None for p in vae_params.values())  # D's loss sees z detached
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d_params.values())
    d_grads = {n: p.grad.clone() for n, p in d_params.items()}

    torch.manual_seed(0)  # forward's one loss: each network gets exactly its own objective's gradient
    out = model(x)
    assert float(out.loss.detach()) == pytest.approx(float(parts.vae_loss.detach()))
    model.zero_grad()
    out.loss.backward()
    for name, grad in {**vae_grads, **d_grads}.items():
        assert torch.allclose(dict(model.named_parameters())[name].grad, grad, atol=1e-6), name


# --- the contract's parameter groups and the trainer -----------------------------------------------------------
def test_stage_declares_the_discriminator_group_and_the_optimizer_honours_it() -> None:
    model = tiny(discriminator_lr_scale=0.25, discriminator_betas=(0.4, 0.8))
    (stage,) = model.stages()
    optimizer = make_optimizer(stage, TrainConfig(lr=1e-3), torch.device("cpu"))
    main, discriminator = optimizer.param_groups
    assert (main["name"], discriminator["name"]) == ("main", "discriminator")
    assert {id(p) for p in discriminator["params"]} == {id(p) for p in model.discriminator.parameters()}
    assert {id(p) for p in main["params"]} | {id(p) for p in discriminator["params"]} == {id(p) for p in model.parameters()}
    assert main["betas"] == (0.9, 0.999) and discriminator["betas"] == (0.4, 0.8)
    assert (main["lr_scale"], discriminator["lr_scale"]) == (1.0, 0.25)


def test_each_group_is_clipped_on_its_own(digits) -> None:
    """grad_clip bounds each group's norm, as two optimisers would: a large VAE gradient does not shrink D's."""
    model = tiny()
    (stage,) = model.stages()
    loop = StageLoop(model, stage, TrainConfig(grad_clip=1.0, grad_skip_threshold=1e6), DistributedContext(),
                     torch.device("cpu"), digits.train.x, None, epochs=1, ema=None, show_stage=False)
    for name, weight in model.named_parameters():
        weight.grad = torch.full_like(weight, 0.01 if name.startswith("discriminator.") else 10.0)
    d_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in model.discriminator.parameters()]))
    assert 0 < d_norm < 1  # below grad_clip: left alone
    assert loop._gradient_is_sane()
    norms = [torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in group["params"]]))
             for group in loop.optimizer.param_groups]
    assert norms[0] == pytest.approx(1.0, rel=1e-4)  # the VAE's group, clipped to grad_clip
    assert norms[1] == pytest.approx(float(d_norm), rel=1e-6)  # D's, untouched
    model.encoder.parameters().__next__().grad[0] = float("inf")
    assert not loop._gradient_is_sane()  # a non-finite norm in any group skips the update


def test_param_groups_are_checked() -> None:
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    def loss(x, y):
        return None
    with pytest.raises(PluginError, match="outside the stage"):
        TrainingStage("s", a.parameters, loss, param_groups=(ParamGroup("g", b.parameters),)).optimizer_groups()
    with pytest.raises(PluginError, match="of another group"):
        TrainingStage("s", a.parameters, loss, param_groups=(ParamGroup("g", a.parameters),
                                                             ParamGroup("h", a.parameters))).optimizer_groups()
    with pytest.raises(PluginError, match="its own name"):
        TrainingStage("s", a.parameters, loss, param_groups=(ParamGroup("s", a.parameters),))
    with pytest.raises(PluginError, match="lr_scale=0"):
        ParamGroup("g", a.parameters, lr_scale=0)
    with pytest.raises(PluginError, match="betas"):
        ParamGroup("g", a.parameters, betas=(0.5, 1.0))


def test_training_lowers_the_loss_and_the_discriminator_beats_chance(digits) -> None:
    # gamma = 0: D trains beside the VAE without pushing back, so the codes keep their correlations for it to find
    model = FactorVAE(FactorVAEConfig(**DIGITS_NETS, input_shape=IMAGE, discriminator_hidden_dims=(32, 32), gamma=0.0))
    result = vaezoo.train(model, digits, epochs=10, batch_size=64, lr=3e-3, progress=False, seed=0)
    losses = [record["train"]["loss"] for record in result.history]
    assert losses[-1] < 0.9 * losses[0]
    assert result.history[-1]["train"]["discriminator_loss"] < math.log(2) - 0.01  # below chance's cross-entropy
    with torch.no_grad():  # D on all 1437 training codes (718 true, 719 permuted), five draws of z and permutations
        accuracy = sum(float(model.eval()(digits.train.x).metrics["discriminator_accuracy"]) for _ in range(5)) / 5
    assert accuracy > 0.55


def test_training_at_the_default_gamma_lowers_the_vae_loss_and_the_elbo(digits) -> None:
    model = tiny()
    assert model.config.gamma == 10.0
    result = vaezoo.train(model, digits, epochs=6, batch_size=64, lr=3e-3, progress=False, seed=0)
    assert result.history[-1]["train"]["loss"] < 0.85 * result.history[0]["train"]["loss"]
    assert result.history[-1]["val"]["neg_elbo"] < result.history[0]["val"]["neg_elbo"]
    assert set(result.val_metrics) >= {"tc", "discriminator_accuracy"}


def test_checkpoint_and_resume_restore_both_networks_optimiser_state(digits, tmp_path) -> None:
    settings = {"batch_size": 64, "lr": 3e-3, "lr_schedule": "constant", "progress": False, "seed": 0}
    overrides = {"discriminator_lr_scale": 0.5}
    torch.manual_seed(0)  # the same initial weights for both runs
    reference = tiny(**overrides)
    vaezoo.train(reference, digits, out_dir=tmp_path / "reference", epochs=3, **settings)

    torch.manual_seed(0)
    interrupted = tiny(**overrides)
    vaezoo.train(interrupted, digits, out_dir=tmp_path / "resumed", epochs=2, **settings)
    tensors, metadata = read_tensors(tmp_path / "resumed" / "checkpoints" / "last.safetensors")
    structure = json.loads(metadata["state"])["optimizer"]
    groups = {group["name"]: group for group in structure["param_groups"]}
    assert set(groups) == {"main", "discriminator"}
    assert list(groups["discriminator"]["betas"]) == [0.5, 0.9] and list(groups["main"]["betas"]) == [0.9, 0.999]
    assert groups["discriminator"]["lr"] == pytest.approx(0.5 * groups["main"]["lr"])
    saved_slots = {int(key.split(".")[1]) for key in tensors if key.startswith("optim.") and key.endswith("exp_avg")}
    d_indices = set(groups["discriminator"]["params"])
    assert d_indices and d_indices <= saved_slots  # D's Adam moments are in the checkpoint, beside the VAE's
    assert set(groups["main"]["params"]) <= saved_slots

    resumed = tiny(**overrides)  # its initial weights do not matter: the checkpoint's replace them
    vaezoo.train(resumed, digits, out_dir=tmp_path / "resumed", resume=True, epochs=3, **settings)
    expected, actual = reference.state_dict(), resumed.state_dict()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)  # bit for bit: every moment was restored


# --- likelihood bound, config, conformance ------------------------------------------------------------------------
def test_importance_weighted_bound_is_above_the_elbo_and_rises_with_k(digits) -> None:
    model = tiny()
    vaezoo.train(model, digits, epochs=6, batch_size=64, lr=3e-3, progress=False, seed=0)  # KL of a few nats
    x = digits.test.x[:64]
    with torch.no_grad():
        elbo = float(-torch.stack([model.eval()(x).neg_elbo for _ in range(20)]).mean())
        bounds = {k: float(torch.stack([model.log_likelihood(x, iw_samples=k).mean() for _ in range(reps)]).mean())
                  for k, reps in ((1, 20), (10, 3), (1000, 3))}
    assert bounds[1] == pytest.approx(elbo, abs=0.3)  # k = 1 is the ELBO (Burda et al. 2016)
    assert elbo + 0.1 < bounds[10] < bounds[1000]  # theorem 1: the bound rises with k (here by ~0.4 and ~0.1 nats)


@pytest.mark.parametrize("bad, message", [
    ({"gamma": -1.0}, "gamma=-1.0"),
    ({"discriminator_hidden_dims": (8, 0)}, "discriminator_hidden_dims=0"),
    ({"discriminator_lr_scale": 0.0}, "discriminator_lr_scale=0.0"),
    ({"discriminator_betas": (0.5, 1.0)}, "discriminator_betas="),
])
def test_bad_config_values_are_named(bad, message) -> None:
    with pytest.raises(ConfigError, match=message):
        tiny(**bad)


def test_create_model_by_name_and_conformance() -> None:
    model = vaezoo.create_model("factor-vae", preset="tiny", input_shape=IMAGE)
    assert isinstance(model, FactorVAE) and model.config.discriminator_hidden_dims == (32, 32)
    check_model(FactorVAE, quick=True)
