"""The KL autoencoder of latent diffusion (plugins/autoencoder_kl.py) against diffusers' AutoencoderKL.

Small random diffusers models of several configurations are saved in diffusers' format and, through the
inverse of the LDM key conversion written here independently, as original single files; vaezoo loads each
and must give diffusers' posterior means, standard deviations and decoded images within 1e-5, tiled and
untiled. Then: older attention names, pickle refusal, the objective's math, the conformance suite,
fine-tuning through the shared trainer, and a tag served by the loopback Hub.

    OMP_NUM_THREADS=1 python -m pytest tests/test_autoencoder_kl.py -q
"""
from __future__ import annotations

import dataclasses
import math
import pickle
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL as DiffusersAutoencoderKL
from hub_server import hub_server, use_loopback_hub
from huggingface_hub import constants as hf_constants
from safetensors.torch import load_file, save_file
from torch.distributions import Normal

import vaezoo
import vaezoo.core.likelihoods
from vaezoo.data import load_data
from vaezoo.errors import CheckpointError, ConfigError, InputError, PretrainedUnavailableError
from vaezoo.testing import check_model
from vaezoo.zoo.registry import register_model
from vaezoo_plugins.autoencoder_kl import AutoencoderKL
from vaezoo_plugins.autoencoder_kl_convert import DIFFUSERS_FILES, DIFFUSERS_WEIGHTS

TOLERANCE = 1e-5
# Each a diffusers AutoencoderKL configuration: quant convs on and off, 4 and 16 latent channels, mid-block
# attention on and off, two and three levels (f = 2 and 4), one and two ResNet blocks per level.
CONFIGS = {
    "sd-like": {"block_out_channels": (16, 32), "layers_per_block": 1, "latent_channels": 4},
    "sd3-like": {"block_out_channels": (16, 32, 32), "layers_per_block": 2, "latent_channels": 16,
                 "use_quant_conv": False, "use_post_quant_conv": False},
    "no-attention": {"block_out_channels": (16, 32), "layers_per_block": 1, "latent_channels": 4,
                     "mid_block_add_attention": False, "use_post_quant_conv": False},
}
GROUPS = 8  # norm_num_groups of the small models (the released ones use 32 on wider channels)
TILE = 16  # pixels: small, so that the 40 x 56 images below really are cut into tiles


@pytest.fixture(autouse=True)
def registered() -> None:
    if "autoencoder-kl" not in vaezoo.list_models():
        register_model(AutoencoderKL, "autoencoder-kl")


def diffusers_model(name: str, seed: int = 0) -> DiffusersAutoencoderKL:
    """A random diffusers model of CONFIGS[name]; norms and biases perturbed too, so that no weight is trivial."""
    torch.manual_seed(seed)
    config = CONFIGS[name]
    levels = len(config["block_out_channels"])
    model = DiffusersAutoencoderKL(down_block_types=("DownEncoderBlock2D",) * levels,
                                   up_block_types=("UpDecoderBlock2D",) * levels, norm_num_groups=GROUPS,
                                   sample_size=TILE, scaling_factor=0.5, shift_factor=0.25, **config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model.eval()


def to_ldm(state: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """diffusers' names as LDM's (CompVis ldm/modules/diffusionmodules/model.py), written independently of the
    plugin's conversion: levels decoder.up.{N-1-i}, nin_shortcut, norm_out, mid.block_k, and attn_1 as 1x1 convs."""
    attention = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}
    ldm = {}
    for key, tensor in state.items():
        part, section, *rest = key.split(".")
        if section == "down_blocks":
            level, kind, *tail = rest
            new = [part, "down", level, *(["block", *tail] if kind == "resnets" else ["downsample", "conv", tail[-1]])]
        elif section == "up_blocks":
            level, kind, *tail = rest
            level = str(levels - 1 - int(level))
            new = [part, "up", level, *(["block", *tail] if kind == "resnets" else ["upsample", "conv", tail[-1]])]
        elif section == "mid_block" and rest[0] == "resnets":
            new = [part, "mid", f"block_{int(rest[1]) + 1}", *rest[2:]]
        elif section == "mid_block":
            new = [part, "mid", "attn_1", attention[rest[2]], rest[-1]]
            if rest[2] != "group_norm" and rest[-1] == "weight":
                tensor = tensor[:, :, None, None]  # LDM's AttnBlock projects with 1x1 convs
        elif section == "conv_norm_out":
            new = [part, "norm_out", *rest]
        else:
            new = [part, section, *rest]
        ldm[".".join("nin_shortcut" if p == "conv_shortcut" else p for p in new)] = tensor.contiguous()
    return ldm


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[DiffusersAutoencoderKL, Path, Path]]:
    """Per configuration: the diffusers model, its diffusers folder and an LDM single file (a whole "checkpoint":
    the VAE under first_stage_model., beside a UNet weight and LDM's training-only loss weights, both dropped)."""
    made = {}
    for name in CONFIGS:
        model = diffusers_model(name)
        folder = tmp_path_factory.mktemp(name)
        model.save_pretrained(folder / "diffusers", safe_serialization=True)
        ldm = to_ldm(model.state_dict(), len(CONFIGS[name]["block_out_channels"]))
        whole = {f"first_stage_model.{k}": v for k, v in ldm.items()}
        whole["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(2, 2)
        whole["first_stage_model.loss.logvar"] = torch.zeros(())
        save_file(whole, str(folder / "sd.safetensors"))
        made[name] = (model, folder / "diffusers", folder / "sd.safetensors")
    return made


def loaded(name: str, fmt: str, saved) -> AutoencoderKL:
    _, folder, single = saved[name]
    if fmt == "diffusers":
        return AutoencoderKL.from_diffusers(folder)
    return AutoencoderKL.from_single_file(single, norm_num_groups=GROUPS, scaling_factor=0.5, shift_factor=0.25,
                                          sample_size=TILE, input_shape=(3, TILE, TILE))


def max_gaps(model: AutoencoderKL, reference: DiffusersAutoencoderKL, height: int, width: int) -> dict[str, float]:
    """Largest |vaezoo - diffusers| of the posterior mean and std and of the decoded image, on the same inputs:
    images x in [0, 1] (diffusers takes 2x - 1) and latents z; decode's [0, 1] means compared as 2 m - 1."""
    generator = torch.Generator().manual_seed(1)
    f = model.config.downsampling
    x = torch.rand(3, 3, height, width, generator=generator)
    z = torch.randn(3, model.config.latent_channels, height // f, width // f, generator=generator)
    with torch.no_grad():
        ours, theirs = model.encode(x), reference.encode(2 * x - 1).latent_dist
        decoded = model.decode(z) * 2 - 1
        expected = reference.decode(z).sample
    assert ours.mean.shape == theirs.mean.shape and decoded.shape == expected.shape
    return {"mean": float((ours.mean - theirs.mean).abs().max()), "std": float((ours.std - theirs.std).abs().max()),
            "decode": float((decoded - expected).abs().max())}


@pytest.mark.parametrize("fmt", ["diffusers", "ldm-single-file"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_diffusers_untiled_and_tiled(name: str, fmt: str, saved) -> None:
    reference = saved[name][0]
    model = loaded(name, fmt, saved)
    assert model.config.latent_channels == CONFIGS[name]["latent_channels"]
    assert (model.quant_conv is None) == (not CONFIGS[name].get("use_quant_conv", True))
    untiled = max_gaps(model, reference, 24, 32)
    assert max(untiled.values()) < TOLERANCE, untiled
    f = model.config.downsampling
    reference.enable_tiling()
    reference.tile_sample_min_size, reference.tile_latent_min_size = TILE, TILE // f
    model.enable_tiling(TILE)
    try:
        tiled = max_gaps(model, reference, 40, 56)
        assert max(tiled.values()) < TOLERANCE, tiled
        reference.enable_slicing()
        model.enable_slicing()
        assert max(max_gaps(model, reference, 40, 56).values()) < TOLERANCE
    finally:
        reference.disable_tiling()
        reference.disable_slicing()
    # Tiling really happened: the tiled codes differ from the untiled ones (the seams of separate tiles).
    x = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        tiled_mean = model.encode(x).mean
        model.disable_tiling()
        assert (tiled_mean - model.encode(x).mean).abs().max() > 1e-3


def test_both_formats_load_the_same_weights(saved) -> None:
    for name in CONFIGS:
        from_folder, from_file = loaded(name, "diffusers", saved), loaded(name, "ldm-single-file", saved)
        assert from_folder.config == from_file.config
        assert all(torch.equal(value, from_file.state_dict()[key]) for key, value in from_folder.state_dict().items())


def test_diffusers_config_is_read(saved) -> None:
    config = loaded("sd3-like", "diffusers", saved).config
    assert (config.block_out_channels, config.layers_per_block, config.latent_channels) == ((16, 32, 32), 2, 16)
    assert (config.scaling_factor, config.shift_factor, config.sample_size, config.norm_num_groups) == (0.5, 0.25, TILE, GROUPS)
    assert config.input_shape == (3, TILE, TILE) and not config.use_quant_conv and config.mid_block_add_attention


def test_older_attention_names_load(saved, tmp_path: Path) -> None:
    """diffusers' names before 0.14 (query, key, value, proj_attn), as old Hub uploads still hold them."""
    _, folder, _ = saved["sd-like"]
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_bytes((folder / "config.json").read_bytes())
    renames = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}
    tensors = {}
    for key, tensor in load_file(str(folder / DIFFUSERS_WEIGHTS)).items():
        for new, previous in renames.items():
            key = key.replace(new, previous)
        tensors[key] = tensor
    assert "encoder.mid_block.attentions.0.query.weight" in tensors
    save_file(tensors, str(old / DIFFUSERS_WEIGHTS))
    current, renamed = AutoencoderKL.from_diffusers(folder), AutoencoderKL.from_diffusers(old)
    assert all(torch.equal(value, renamed.state_dict()[key]) for key, value in current.state_dict().items())
    reference = DiffusersAutoencoderKL.from_pretrained(old)  # diffusers reads them too, into the same model
    assert max(max_gaps(renamed, reference, 16, 16).values()) < TOLERANCE


def one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    assert "\n" not in str(error.value)
    return str(error.value)


@pytest.mark.parametrize("suffix", [".ckpt", ".bin", ".pt"])
def test_pickles_are_refused_without_being_opened(tmp_path: Path, saved, suffix: str) -> None:
    marker = tmp_path / "unpickled"

    class Payload:  # unpickling it would create the marker file
        def __reduce__(self):
            return (Path.touch, (marker,))

    pickled = tmp_path / f"vae{suffix}"
    pickled.write_bytes(pickle.dumps({"state_dict": Payload()}))
    with pytest.raises(CheckpointError) as error:
        AutoencoderKL.from_single_file(pickled)
    assert "pickle-format file: vaezoo loads safetensors only" in one_line(error)
    folder = tmp_path / "diffusers-bin"
    folder.mkdir()
    (folder / "config.json").write_bytes((saved["sd-like"][1] / "config.json").read_bytes())
    (folder / f"diffusion_pytorch_model{suffix}").write_bytes(pickled.read_bytes())
    with pytest.raises(CheckpointError) as error:
        AutoencoderKL.from_diffusers(folder)
    assert f"diffusion_pytorch_model{suffix} is a pickle-format file" in one_line(error)
    assert not marker.exists()


def test_bad_sources_are_one_line_errors(tmp_path: Path, saved) -> None:
    with pytest.raises(CheckpointError, match="is not a folder"):
        AutoencoderKL.from_diffusers(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text('{"act_fn": "gelu", "block_out_channels": [16, 32], "norm_num_groups": 8}')
    with pytest.raises(CheckpointError) as error:
        AutoencoderKL.from_diffusers(bad)
    assert "act_fn='gelu'" in one_line(error) and "down_block_types" in str(error.value)
    save_file({"first_stage_model.x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="holds no LDM autoencoder keys"):
        AutoencoderKL.from_single_file(tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError) as error:  # weights of another architecture: strict loading names them
        AutoencoderKL.from_single_file(saved["sd-like"][2], norm_num_groups=GROUPS, layers_per_block=2)
    assert "missing keys" in one_line(error)


def tiny(**overrides) -> AutoencoderKL:
    return vaezoo.create_model("autoencoder-kl", preset="tiny", **overrides)


def test_bad_inputs_and_settings_are_one_line_errors(saved) -> None:
    model = tiny()
    with pytest.raises(InputError, match=r"not a float batch \(B, 3, H, W\)"):
        model.encode(torch.rand(1, 1, 16, 16))
    with pytest.raises(InputError, match=r"decode takes latents \(B, 4, h, w\)"):
        model.decode(torch.rand(1, 3, 8, 8))
    with pytest.raises(InputError, match="tile_size of at least 4"):
        model.enable_tiling(1)
    with pytest.raises(InputError, match="slice_size=0"):
        model.enable_slicing(0)
    with pytest.raises(ConfigError, match="norm_num_groups=8 must divide"):
        tiny(block_out_channels=(12, 32))
    with pytest.raises(ConfigError, match="reconstruction_loss='lpips' is unknown"):
        tiny(reconstruction_loss="lpips")
    with pytest.raises(ConfigError) as error:  # released weights decode pixels: only the Gaussian reads them
        AutoencoderKL.from_diffusers(saved["sd-like"][1], likelihood="bernoulli")
    assert "only likelihood='gaussian'" in one_line(error)


def test_sides_f_does_not_divide_are_padded_by_repetition_and_cropped_back() -> None:
    model = tiny(input_shape=(3, 9, 7), block_out_channels=(16, 32, 32)).eval()  # f = 4
    x = torch.rand(2, 3, 9, 7)
    with torch.no_grad():
        posterior = model.encode(x)
        assert posterior.mean.shape == (2, 4, 3, 2) and model.latent_shape() == (4, 3, 2)
        padded = torch.cat([x, x[:, :, -1:].expand(2, 3, 3, 7)], dim=2)  # 9 -> 12 rows: the last one repeated
        padded = torch.cat([padded, padded[:, :, :, -1:].expand(2, 3, 12, 1)], dim=3)  # 7 -> 8 columns
        assert torch.equal(model.encode(padded).mean, posterior.mean)
        decoded = model.decode(posterior.mean)
        assert decoded.shape == x.shape  # the config's grid: cropped to its 9 x 7
        assert torch.equal(decoded, ((model._pixels(posterior.mean) + 1) / 2)[:, :, :9, :7])  # the 12 x 8 decode, cropped
        assert model.decode(torch.cat([posterior.mean] * 2, dim=3)).shape == (2, 3, 12, 16)  # another grid: uncropped
        assert model.reconstruct(x).shape == x.shape and model(x).params.shape == x.shape
        assert model.sample(3).shape == (3, 3, 9, 7)
        assert model.encode(torch.rand(1, 3, 20, 44)).mean.shape == (1, 4, 5, 11)  # any size, f dividing or not


@pytest.mark.parametrize("likelihood", ["bernoulli", "logistic_mixture"])
def test_other_likelihoods_take_their_parameters_from_the_decoder(likelihood: str) -> None:
    """Trained from scratch the decoder may emit Bernoulli logits or a logistic mixture's parameters."""
    model = tiny(likelihood=likelihood, mixture_components=2)
    x = torch.rand(2, 3, 32, 32)
    out = model(x)
    assert out.params.shape == (2, *vaezoo.core.likelihoods.param_shape(model.config))
    torch.testing.assert_close(out.recon, -model.likelihood.log_prob(out.params, x).mean())
    assert bool(torch.isfinite(out.loss)) and out.loss.requires_grad
    samples = model.eval().sample(2)
    assert samples.shape == x.shape and 0 <= float(samples.min()) <= float(samples.max()) <= 1


def test_latents_apply_the_scaling_and_shift_factors() -> None:
    model = tiny(scaling_factor=0.3611, shift_factor=0.1159).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        z = model.encode(x).mean
        latents = model.latents(x)
        torch.testing.assert_close(latents, (z - 0.1159) * 0.3611)
        assert torch.equal(model.from_latents(latents), model.decode(latents / 0.3611 + 0.1159))
        torch.testing.assert_close(model.from_latents(latents), model.decode(z), rtol=0, atol=1e-5)  # float rounding only
        torch.manual_seed(3)
        drawn = model.latents(x, sample=True)
        torch.manual_seed(3)
        torch.testing.assert_close(drawn, (model.encode(x).rsample() - 0.1159) * 0.3611)


def test_forward_reports_the_gaussian_elbo_and_trains_on_l1_plus_beta_kl(saved) -> None:
    """neg_elbo = -log N(x; x_hat, s^2) + KL(q || N(0, I)), against torch.distributions and diffusers' own KL;
    loss = sum |x - x_hat| on [-1, 1] pixels + beta KL, plus the scale's fit at the detached x_hat."""
    model = AutoencoderKL.from_diffusers(saved["sd-like"][1], reconstruction_loss="l1", beta=1e-3)
    with torch.no_grad():
        model.likelihood.log_scale.copy_(torch.tensor([-1.0, -0.5, 0.0]))
    x = torch.rand(4, *model.config.input_shape)
    torch.manual_seed(5)
    out = model(x)
    torch.manual_seed(5)
    posterior = model.encode(x)
    x_hat = model.decode(posterior.rsample())
    scale = torch.tensor([-1.0, -0.5, 0.0]).exp().view(1, 3, 1, 1)
    nll = -Normal(x_hat, scale).log_prob(x).flatten(1).sum(1)
    kl = saved["sd-like"][0].encode(2 * x - 1).latent_dist.kl()  # diffusers' DiagonalGaussianDistribution.kl
    torch.testing.assert_close(out.neg_elbo, nll + kl, rtol=1e-5, atol=1e-3)
    l1 = (2 * (x_hat - x)).abs().flatten(1).sum(1)
    torch.testing.assert_close(out.terms["l1"], l1.mean())
    torch.testing.assert_close(out.loss, (l1 + 1e-3 * kl).mean() + nll.mean(), rtol=1e-5, atol=1e-3)
    assert torch.equal(out.params, x_hat)


def test_the_l2_objective_and_the_elbo_objective() -> None:
    model = tiny(reconstruction_loss="l2", beta=0.5)
    x = torch.rand(3, 3, 32, 32)
    torch.manual_seed(2)
    out = model(x)
    l2 = ((2 * (out.params - x)) ** 2).flatten(1).sum(1)
    torch.testing.assert_close(out.terms["l2"], l2.mean())
    torch.testing.assert_close(out.loss, l2.mean() + 0.5 * out.kl + out.recon)  # out.recon: the scale's fit
    elbo_model = tiny(reconstruction_loss="nll", beta=1.0)
    out = elbo_model(x)
    torch.testing.assert_close(out.loss, out.neg_elbo.mean())
    assert out.terms == {}


def test_the_prior_sample_is_a_latent_grid() -> None:
    model = tiny(input_shape=(3, 16, 24)).eval()
    assert model.prior_sample(5).shape == (5, 4, 8, 12)
    assert model.sample(2).shape == (2, 3, 16, 24)
    assert model.log_likelihood(torch.rand(2, 3, 16, 24), iw_samples=4).shape == (2,)


def test_conforms_quick() -> None:
    report = check_model("autoencoder-kl", quick=True)
    assert "save_load" in report.passed and "log_likelihood" in report.passed
    assert "latent_sampler" in report.skipped  # a latent grid, not one vector: sample(sampler="gmm") is refused


@pytest.mark.slow
def test_conforms_with_the_training_run() -> None:
    assert "train_on_digits" in check_model("autoencoder-kl").passed


def test_fine_tunes_through_the_shared_trainer_on_l1_plus_beta_kl() -> None:
    """LDM's objective (L1 + 1e-6 KL) through vaezoo.train: the L1 term falls, and the Gaussian's scale, fitted
    beside it, moves down from its start s = 1 (the residuals of [0, 1] digits are far smaller), tightening the -ELBO."""
    splits = load_data("digits")
    splits = dataclasses.replace(splits, train=splits.train[:320])
    model = tiny(input_shape=(1, 8, 8), reconstruction_loss="l1", beta=1e-6)
    result = vaezoo.train(model, splits, epochs=3, batch_size=32, lr=3e-3, progress=False, seed=0)
    l1 = [record["train"]["l1"] for record in result.history]
    assert l1[-1] < 0.8 * l1[0], l1
    assert float(model.likelihood.log_scale.detach().max()) < 0
    assert math.isfinite(result.history[-1]["train"]["loss"])


@pytest.mark.skipif(hf_constants.HF_HUB_OFFLINE, reason="HF_HUB_OFFLINE was set when huggingface_hub was imported")
def test_a_tag_loads_a_diffusers_subfolder_from_the_hub(saved, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tag naming a Hub repo, its subfolder and diffusers' files (as autoencoder-kl.sd3 does), served by the
    loopback Hub: resolved through huggingface_hub's cache and loaded strictly through from_foreign_folder."""
    reference, folder, _ = saved["sd3-like"]
    config = {**CONFIGS["sd3-like"], "norm_num_groups": GROUPS, "scaling_factor": 0.5, "shift_factor": 0.25,
              "sample_size": TILE, "input_shape": (3, TILE, TILE)}
    tag = vaezoo.PretrainedTag(config, dataset="random", hf_hub_id="vaezoo-test/tiny-kl", hub_subfolder="vae",
                               hub_files=DIFFUSERS_FILES)
    wrong = vaezoo.PretrainedTag({**config, "norm_num_groups": 16}, dataset="random", hf_hub_id="vaezoo-test/tiny-kl",
                                 hub_subfolder="vae", hub_files=DIFFUSERS_FILES)
    monkeypatch.setattr(AutoencoderKL, "pretrained_tags", {"loopback": tag, "wrong": wrong})
    with hub_server() as (url, store):
        api = use_loopback_hub(monkeypatch, url, tmp_path / "cache")
        api.create_repo("vaezoo-test/tiny-kl")
        api.upload_folder(repo_id="vaezoo-test/tiny-kl", folder_path=str(folder), path_in_repo="vae")
        model = vaezoo.create_model("autoencoder-kl.loopback", pretrained=True)
        assert model.model_name == "autoencoder-kl.loopback" and not model.training
        assert max(max_gaps(model, reference, 16, 24).values()) < TOLERANCE
        with pytest.raises(CheckpointError, match=r"norm_num_groups=8 \(the tag says 16\)"):
            vaezoo.create_model("autoencoder-kl.wrong", pretrained=True)
        fetched = {request.split("/resolve/", 1)[1].split("/", 1)[1] for request in store.requests if "/resolve/" in request}
        assert fetched == {"vae/config.json", "vae/diffusion_pytorch_model.safetensors"}  # nothing else, no pickle
        assert store.unhandled == []
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # now from the cache alone
    assert max(max_gaps(vaezoo.create_model("autoencoder-kl.loopback", pretrained=True), reference, 16, 24).values()) < TOLERANCE
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(PretrainedUnavailableError, match="HF_HUB_OFFLINE"):
        vaezoo.create_model("autoencoder-kl.loopback", pretrained=True)


def test_the_released_tags_name_their_repos_and_latent_conventions() -> None:
    tags = AutoencoderKL.pretrained_tags
    assert {name: (tag.hf_hub_id, tag.hub_subfolder) for name, tag in tags.items()} == {
        "sd-ft-mse": ("stabilityai/sd-vae-ft-mse", ""), "sdxl": ("stabilityai/sdxl-vae", ""),
        "sd3": ("stabilityai/stable-diffusion-3-medium-diffusers", "vae"), "flux": ("black-forest-labs/FLUX.1-dev", "vae")}
    factors = {name: (tag.config["scaling_factor"], tag.config.get("shift_factor", 0.0), tag.config.get("latent_channels", 4))
               for name, tag in tags.items()}
    assert factors == {"sd-ft-mse": (0.18215, 0.0, 4), "sdxl": (0.13025, 0.0, 4), "sd3": (1.5305, 0.0609, 16),
                       "flux": (0.3611, 0.1159, 16)}
    assert "gated" in tags["flux"].description and "gated" in tags["sd3"].description
    assert all(tag.hub_files == DIFFUSERS_FILES for tag in tags.values())
