"""Behaviour and math of the vq-vae plugin: quantization, straight-through gradients, the EMA
codebook and its resets, the prior as a distribution, the two training stages, and a short
end-to-end run on scikit-learn's bundled 8x8 digits."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

import vaezoo
from vaezoo.errors import ConfigError, InputError

pytestmark = pytest.mark.usefixtures("one_thread")  # every test here trains or runs a tiny model


def tiny(**overrides) -> vaezoo.VAE:
    return vaezoo.create_model("vq-vae", preset="tiny", **{"input_shape": (1, 8, 8), **overrides})


@pytest.fixture(scope="module")
def digit_images() -> torch.Tensor:
    datasets = pytest.importorskip("sklearn.datasets")
    return torch.tensor(datasets.load_digits().images / 16.0, dtype=torch.float32).unsqueeze(1)  # (1797, 1, 8, 8)


def test_tiny_grid_and_output_shapes() -> None:
    torch.manual_seed(0)
    model = tiny()
    out = model(torch.rand(5, 1, 8, 8))
    assert model.grid_shape == (2, 2)
    assert model.encode(torch.rand(5, 1, 8, 8)).z_e.shape == (5, 8, 2, 2)  # (B, D, h, w)
    assert out.params.shape == (5, 1, 8, 8) and out.neg_elbo.shape == (5,)
    assert set(out.scalars()) == {"loss", "recon", "kl", "commit", "vq", "perplexity", "code_usage"}
    assert not model.has_log_likelihood


def test_quantization_picks_nearest_code() -> None:
    torch.manual_seed(0)
    model = tiny().eval()
    codebook = model.quantizer.codebook  # (K, D) ~ N(0, I)
    z = torch.randn(512, 8)  # on the codebook's scale, so many codes compete
    indices = model.quantizer.nearest(z)
    distances = ((z[:, None, :] - codebook[None]) ** 2).sum(-1)  # (N, K), brute force
    chosen = distances.gather(1, indices[:, None]).squeeze(1)
    torch.testing.assert_close(chosen, distances.min(1).values, rtol=1e-5, atol=1e-5)
    assert indices.unique().numel() > 16
    posterior = model.encode(torch.rand(16, 1, 8, 8))  # the model path: (B, D, h, w) rows in index order
    z_rows = posterior.z_e.movedim(1, -1).reshape(-1, 8)
    assert torch.equal(posterior.indices.flatten(), model.quantizer.nearest(z_rows))
    expected = codebook[posterior.indices].movedim(-1, 1)
    assert torch.equal(posterior.z_q, expected)
    torch.testing.assert_close(posterior.mean, expected)


def test_straight_through_copies_decoder_gradient_to_encoder() -> None:
    torch.manual_seed(0)
    model = tiny()
    x = torch.rand(8, 1, 8, 8)
    posterior = model.encode(x)
    posterior.z_e.retain_grad()
    z = posterior.mean
    z.retain_grad()
    recon = -model.likelihood.log_prob(model.decode(z), x).sum()
    recon.backward()
    assert torch.equal(posterior.z_e.grad, z.grad)  # dL/dz_e := dL/dz_q (section 2.2)
    model.zero_grad()
    model(x).recon.backward()
    first_conv = model.encoder[0].net[0]
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0


def test_ema_update_matches_hand_computation() -> None:
    model = tiny(code_dim=2, codebook_size=2, ema_decay=0.5, dead_code_threshold=0.0)
    quantizer = model.quantizer
    quantizer.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    quantizer.ema_sum.copy_(quantizer.codebook)
    quantizer.ema_count.fill_(1.0)
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]])
    indices = quantizer.nearest(z)
    assert indices.tolist() == [0, 0, 1]
    quantizer.update(z, indices)
    # N = 0.5 * 1 + 0.5 * [2, 1];  m = 0.5 * e + 0.5 * sum of assigned z;  e = m / N (Laplace-smoothed)
    count = torch.tensor([1.5, 1.0])
    torch.testing.assert_close(quantizer.ema_count, count)
    total, eps = count.sum(), 1e-5
    smoothed = (count + eps) / (total + 2 * eps) * total
    expected = torch.tensor([[0.5, 0.5], [9.5, 9.5]]) / smoothed[:, None]
    torch.testing.assert_close(quantizer.codebook, expected)
    # Code 0 moved from (0, 0) toward its assigned mean (0.5, 0.5): about (1/3, 1/3).
    torch.testing.assert_close(quantizer.codebook[0], torch.tensor([1 / 3, 1 / 3]), atol=1e-4, rtol=0)


def test_dead_codes_reset_to_encoder_outputs_deterministically() -> None:
    def one_step(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        model = tiny()
        quantizer = model.quantizer
        quantizer.codebook[0] = 1e3  # so far away that no encoder output picks it
        quantizer.ema_count.fill_(1e3)
        quantizer.ema_sum.copy_(quantizer.codebook * 1e3)
        quantizer.ema_count[0] = 0.0
        x = torch.rand(32, 1, 8, 8)
        z = model.encode(x).z_e.detach().movedim(1, -1).reshape(-1, 8)
        torch.manual_seed(seed)
        model.train()(x)
        return quantizer.codebook.clone(), z

    codebook, z = one_step(seed=1)
    assert (z == codebook[0]).all(1).any()  # code 0 is now one of this batch's encoder outputs
    again, _ = one_step(seed=1)
    assert torch.equal(codebook, again)


def test_no_codebook_change_in_eval_or_prior_stage() -> None:
    torch.manual_seed(0)
    model = tiny()
    before = {k: v.clone() for k, v in model.quantizer.state_dict().items()}
    x = torch.rand(16, 1, 8, 8)
    model.eval()(x)
    model.train().prior_loss(x).loss.backward()
    model.reconstruct(x)
    for key, value in model.quantizer.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in model.autoencoder_parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.prior.parameters())


def test_untrained_prior_is_uniform() -> None:
    torch.manual_seed(0)
    model = tiny().eval()
    x = torch.rand(6, 1, 8, 8)
    out = model(x)
    uniform = model.num_codes * math.log(model.config.codebook_size)  # 4 * log 32
    assert model.num_codes == 4
    torch.testing.assert_close(out.kl, torch.tensor(uniform), rtol=1e-6, atol=0)
    recon = -model.likelihood.log_prob(out.params, x)  # (B,)
    torch.testing.assert_close(out.neg_elbo, recon + uniform)  # the one-hot posterior's bound, eq. 3 + log K per code


def test_prior_is_causal_and_normalised() -> None:
    torch.manual_seed(0)
    model = vaezoo.create_model("vq-vae", preset="tiny", input_shape=(6,), codebook_size=3, num_latent_codes=3)
    prior = model.prior.eval()
    for p in prior.parameters():
        torch.nn.init.normal_(p, std=0.5)
    codes = torch.tensor(list(itertools.product(range(3), repeat=3)))  # all 27 sequences
    torch.testing.assert_close(prior.log_prob(codes).exp().sum(), torch.tensor(1.0), rtol=1e-5, atol=0)
    tokens = torch.tensor([[3, 0, 1]])  # BOS, k_0, k_1
    changed = torch.tensor([[3, 0, 2]])  # differs at input position 2
    torch.testing.assert_close(prior.next_logits(tokens)[:, :2], prior.next_logits(changed)[:, :2])
    assert not torch.allclose(prior.next_logits(tokens)[:, 2], prior.next_logits(changed)[:, 2])


def test_stages_split_parameters() -> None:
    for update in ("ema", "loss"):
        model = tiny(codebook_update=update)
        autoencoder, prior = model.stages()
        assert (autoencoder.name, prior.name) == ("autoencoder", "prior")
        first, second = {id(p) for p in autoencoder.parameters()}, {id(p) for p in prior.parameters()}
        assert first and second and not first & second
        assert first | second == {id(p) for p in model.parameters()}
        assert (id(model.quantizer.codebook) in first) == (update == "loss")


def test_loss_codebook_update_trains_codebook() -> None:
    torch.manual_seed(0)
    model = tiny(codebook_update="loss")
    out = model(torch.rand(8, 1, 8, 8))
    assert out.terms["vq"] > 0
    out.loss.backward()  # the dead-code reset in forward must not break autograd
    assert model.quantizer.codebook.grad.abs().sum() > 0
    assert "quantizer.ema_sum" not in model.state_dict()


def test_vector_inputs() -> None:
    torch.manual_seed(0)
    model = vaezoo.create_model("vq-vae", preset="tiny", input_shape=(64,))
    x = torch.rand(10, 64)
    out = model(x)
    out.loss.backward()
    assert model.grid_shape == (4,) and model.encode(x).indices.shape == (10, 4)
    assert out.params.shape == (10, 64)
    torch.testing.assert_close(out.kl, torch.tensor(4 * math.log(32)), rtol=1e-6, atol=0)
    assert model.prior_loss(x).loss > 0
    assert model.sample(3).shape == (3, 64)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="did you mean 'ema'"):
        tiny(codebook_update="emma")
    with pytest.raises(ConfigError, match="spatial"):
        tiny(encoder="timm:resnet18")
    with pytest.raises(ConfigError, match="both"):
        tiny(encoder="mlp", decoder="conv")
    with pytest.raises(ConfigError, match="prior_heads"):
        tiny(prior_dim=30, prior_heads=4)
    model = tiny()
    with pytest.raises(InputError, match="0..31"):
        model.codes_to_latents(torch.tensor([[[0, 32], [1, 2]]]))
    with pytest.raises(InputError, match="shape"):
        model(torch.rand(2, 1, 28, 28))


def test_state_dict_round_trip(tmp_path) -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    torch.manual_seed(0)
    model = tiny()
    x = torch.rand(16, 1, 8, 8)
    for _ in range(3):
        model(x)  # moves the EMA buffers away from their initial values
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file(model.state_dict(), str(path))
    torch.manual_seed(1)
    loaded = tiny()
    loaded.load_state_dict(safetensors_torch.load_file(str(path)), strict=True)
    model.eval(), loaded.eval()
    a, b = model(x), loaded(x)
    assert torch.equal(a.params, b.params) and torch.equal(a.kl, b.kl)
    assert {"quantizer.codebook", "quantizer.ema_count", "quantizer.ema_sum"} <= set(model.state_dict())


def _train_stage(model: vaezoo.VAE, stage, data: torch.Tensor, steps: int, lr: float) -> None:
    optimizer = torch.optim.Adam(stage.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        batch = data[torch.randint(len(data), (128,))]
        model.train_step = step
        optimizer.zero_grad()
        stage.loss(batch).loss.backward()
        optimizer.step()


def test_digits_two_stage_training(digit_images: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = tiny()
    autoencoder, prior = model.stages()
    x = digit_images
    before = model.eval()(x)
    _train_stage(model, autoencoder, x, steps=300, lr=3e-3)
    out = model.eval()(x)
    assert out.loss.item() < 0.7 * before.loss.item(), (before.loss.item(), out.loss.item())
    assert out.recon.item() < 0.7 * before.recon.item(), (before.recon.item(), out.recon.item())
    uniform = model.num_codes * math.log(model.config.codebook_size)
    torch.testing.assert_close(out.kl, torch.tensor(uniform), rtol=1e-6, atol=0)  # stage 1 leaves the prior alone
    perplexity = out.terms["perplexity"].item()
    print(f"vq-vae digits: loss {before.loss.item():.1f} -> {out.loss.item():.1f}, "
          f"recon {before.recon.item():.1f} -> {out.recon.item():.1f}, perplexity {perplexity:.1f}, "
          f"code usage {out.terms['code_usage'].item():.2f}")
    assert perplexity > 1

    _train_stage(model, prior, x, steps=200, lr=3e-3)
    prior_nll = model.eval().prior_loss(x).loss.item()
    print(f"vq-vae digits: prior nll {prior_nll:.2f} nats vs uniform {uniform:.2f}")
    assert prior_nll < 0.9 * uniform
    torch.testing.assert_close(model(x).kl, torch.tensor(prior_nll), rtol=1e-4, atol=1e-4)

    samples = model.sample(6)
    assert samples.shape == (6, 1, 8, 8)
    assert samples.min() >= 0 and samples.max() <= 1
