"""Variants that take any image size (capabilities.any_image_size, autoencoder-kl): reconstruct at each image's own
size, and `vaezoo reconstruct` on a folder of RGB images of mixed sizes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import vaezoo
from vaezoo import apps
from vaezoo.cli import main

SIZES = [(40, 56), (33, 47), (32, 32), (64, 24)]  # (H, W): the config's 32x32, sides f = 2 divides, and ones it does not


@pytest.fixture(scope="module")
def model() -> vaezoo.VAE:
    torch.manual_seed(0)
    return vaezoo.create_model("autoencoder-kl", preset="tiny").eval()


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(SIZES):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_reconstruct_returns_each_image_at_its_own_size_and_matches_the_config_size_path(model) -> None:
    for h, w in SIZES:
        x = torch.rand(2, 3, h, w)
        recon = model.reconstruct(x)
        assert recon.shape == x.shape and apps.reconstruct(model, x[0]).shape == (1, 3, h, w)
        # sides f does not divide are padded by repeating the last row and column, then cropped back from (0, 0):
        # the same as reconstructing the padded image and cropping it by hand
        padded = torch.nn.functional.pad(x, (0, -w % 2, 0, -h % 2), mode="replicate")
        assert torch.allclose(recon, model.reconstruct(padded)[..., :h, :w], atol=1e-6)
    same = torch.rand(2, 3, 32, 32)  # the config's size: the any-size path is the old one, bit for bit
    assert torch.equal(model.reconstruct(same), model.likelihood.mean(model.decode(model.encode_mean(same))))
    with pytest.raises(vaezoo.InputError, match=r"x has shape \(2, 1, 40, 40\)"):
        model.reconstruct(torch.rand(2, 1, 40, 40))  # the channels still have to match
    fixed = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(1, 8, 8))
    with pytest.raises(vaezoo.InputError, match=r"takes \(B, 1, 8, 8\)"):
        fixed.reconstruct(torch.rand(2, 1, 9, 9))  # a variant without the capability keeps its one size


def test_reconstruct_a_folder_of_mixed_sizes_to_a_folder_a_grid_and_an_npz(model, photos, tmp_path) -> None:
    model.save_pretrained(tmp_path / "m")
    result = run("reconstruct", tmp_path / "m", "--data", photos, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    written = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in written] == [f"p{i}.png" for i in range(len(SIZES))]
    assert [Image.open(p).size for p in written] == [(w, h) for h, w in SIZES]  # PIL gives (W, H)

    result = run("reconstruct", tmp_path / "m", "--data", photos, "-o", tmp_path / "r.npz")
    arrays = np.load(tmp_path / "r.npz")
    errors = [float(((arrays[f"reconstruction_{i}"] - arrays[f"original_{i}"]) ** 2).mean()) for i in range(len(SIZES))]
    pixels = [arrays[f"original_{i}"].size for i in range(len(SIZES))]
    mse = sum(e * n for e, n in zip(errors, pixels)) / sum(pixels)
    psnr = sum(10 * math.log10(1 / e) for e in errors) / len(errors)
    assert f"(mean squared error {mse:.4f}, mean PSNR {psnr:.2f} dB)" in result.output  # printed = recomputed
    assert list(arrays["names"]) == [f"p{i}.png" for i in range(len(SIZES))]
    original = np.asarray(Image.open(photos / "p1.png"), dtype=np.float32).transpose(2, 0, 1) / 255
    assert np.allclose(arrays["original_1"], original)

    assert run("reconstruct", tmp_path / "m", "--data", photos, "--n", 3, "-o", tmp_path / "g.png").exit_code == 0
    refused = run("reconstruct", tmp_path / "m", "--data", photos, "-o", tmp_path / "r.npy")
    assert refused.exit_code == 1 and "images of different sizes go to a folder" in refused.output


def test_reconstruct_tile_codes_large_images_in_tiles(model, photos, tmp_path) -> None:
    """--tile N is the model's enable_tiling(N): each image equals reconstruct with tiling on (not the untiled one,
    as blended tiles change the output a little); a model that cannot tile refuses --tile in one line."""
    model.save_pretrained(tmp_path / "m")
    result = run("reconstruct", tmp_path / "m", "--data", photos, "--tile", 16, "-o", tmp_path / "r.npz")
    assert result.exit_code == 0, result.output
    arrays = np.load(tmp_path / "r.npz")
    tiled = vaezoo.load_model_dir(tmp_path / "m").eval()
    tiled.enable_tiling(16)
    x = torch.from_numpy(arrays["original_0"])[None]  # 40 x 56: cut into tiles of 16
    assert np.allclose(arrays["reconstruction_0"], tiled.reconstruct(x)[0].numpy(), atol=1e-6)
    assert not np.allclose(arrays["reconstruction_0"], model.reconstruct(x)[0].numpy(), atol=1e-4)
    vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(1, 8, 8)).save_pretrained(tmp_path / "mlp")
    refused = run("reconstruct", tmp_path / "mlp", "--data", "digits", "--tile", 16, "-o", tmp_path / "d.png")
    assert refused.exit_code == 1 and "does not code in tiles" in refused.output and len(refused.output.splitlines()) == 1

def test_a_model_of_one_size_or_one_channel_refuses_the_folder_in_one_line(photos, tmp_path) -> None:
    vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(3, 32, 32)).save_pretrained(tmp_path / "fixed")
    fixed = run("reconstruct", tmp_path / "fixed", "--data", photos, "-o", tmp_path / "r.png")
    assert fixed.exit_code == 1 and "have different sizes" in fixed.output
    folder_out = run("reconstruct", tmp_path / "fixed", "--data", photos, "-o", tmp_path / "out")
    assert folder_out.exit_code == 1 and "has extension '(none)'" in folder_out.output
    gray = vaezoo.create_model("autoencoder-kl", preset="tiny", input_shape=(1, 32, 32))
    gray.save_pretrained(tmp_path / "gray")
    colour = run("reconstruct", tmp_path / "gray", "--data", photos, "-o", tmp_path / "g.png")
    assert colour.exit_code == 1 and "is in colour (RGB) but the model takes 1 channel" in colour.output



def test_forward_gives_the_elbo_of_an_image_of_any_size(model) -> None:
    """Its -ELBO at a size f does not divide: the decoded padded image cropped back, then the Gaussian's -log p
    and the analytic KL over the whole (padded) latent grid; at the config's size, the same figures as before."""
    for h, w in SIZES:
        x = torch.rand(2, 3, h, w)
        torch.manual_seed(4)
        out = model(x)
        torch.manual_seed(4)
        posterior = model.encode(x)
        params = model.decode(posterior.rsample())[..., :h, :w]
        scale = model.likelihood.log_scale.exp().view(1, 3, 1, 1)
        nll = -torch.distributions.Normal(params, scale).log_prob(x).flatten(1).sum(1)
        kl = 0.5 * (posterior.mean**2 + posterior.logvar.exp() - 1 - posterior.logvar).flatten(1).sum(1)
        torch.testing.assert_close(out.neg_elbo, nll + kl)
        assert out.params.shape == x.shape


def test_interpolation_anomaly_scores_and_latent_maps_run_at_an_image_size_not_the_configs(model, tmp_path) -> None:
    """The zoo's applications on a folder of one size other than the config's 32x32 (33x47: f = 2 divides neither
    side): interpolation ends equal the reconstructions, the anomaly CSV's scores equal the -ELBO recomputed, and
    the latent map and traversal are written. Images of two sizes cannot share a path: refused in one line."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, (33, 47, 3), dtype=np.uint8)).save(folder / f"p{i:02d}.png")
    model.save_pretrained(tmp_path / "m")
    splits = vaezoo.data.load_data(str(folder))
    train, test = splits.train.x, splits.test.x
    assert train.shape[1:] == (3, 33, 47)

    path = apps.interpolate(model, train[0], train[1], steps=5)
    assert path.shape == (5, 3, 33, 47)
    torch.testing.assert_close(path[0], model.reconstruct(train[:1])[0])
    torch.testing.assert_close(path[-1], model.reconstruct(train[1:2])[0])
    result = run("interpolate", tmp_path / "m", "--data", folder, "--split", "train", "--from", 0, "--to", 1,
                 "--steps", 5, "-o", tmp_path / "path.npz")
    assert result.exit_code == 0, result.output
    assert np.allclose(np.load(tmp_path / "path.npz")["x"], path.numpy(), atol=1e-6)
    with pytest.raises(vaezoo.InputError, match=r"x_from is \(3, 33, 47\) but x_to is \(3, 32, 32\)"):
        apps.interpolate(model, train[0], torch.rand(3, 32, 32))

    result = run("anomaly", tmp_path / "m", "--data", folder, "-o", tmp_path / "scores.csv")
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "scores.csv").read_text().splitlines()[1:]
    scores = torch.tensor([float(row.split(",")[1]) for row in rows])
    torch.testing.assert_close(scores, apps.neg_elbo_scores(model, test, seed=0), rtol=0, atol=1e-2)  # CSV: 4 decimals

    for args, out in ((["-o"], "map.csv"), (["--traverse", "--rows", 2, "--steps", 3, "-o"], "traversal.npz")):
        result = run("explore", tmp_path / "m", "--data", folder, "--split", "train", *args, tmp_path / out)
        assert result.exit_code == 0, result.output
    assert len((tmp_path / "map.csv").read_text().splitlines()) == 1 + len(train)
    assert np.load(tmp_path / "traversal.npz")["x"].shape == (6, 3, 33, 47)

    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "other.png")
    mixed = run("anomaly", tmp_path / "m", "--data", folder, "-o", tmp_path / "s.csv")
    assert mixed.exit_code == 1 and "have different sizes" in mixed.output and len(mixed.output.splitlines()) == 1

def test_reconstruct_grids_keep_each_original_above_its_reconstruction_for_any_n(tmp_path) -> None:
    """--n 3 and --n 11 used to fail ("2 row labels for a grid of 1 rows"): a short row now fills with blanks."""
    for n in (3, 11):
        result = run("reconstruct", "vae-mlp.digits", "--data", "digits", "--n", n, "-o", tmp_path / f"r{n}.png")
        assert result.exit_code == 0 and f"wrote {n} reconstructions" in result.output, result.output
    from vaezoo.io.figures import interleave_rows

    top, bottom = torch.zeros(11, 1, 2, 2), torch.full((11, 1, 2, 2), 0.5)
    grid = interleave_rows(top, bottom, 8)
    assert grid.shape[0] == 32 and (grid[8:16] == 0.5).all() and (grid[16:19] == 0).all() and (grid[19:24] == 1).all()


@pytest.mark.slow
def test_bench_runs_on_an_rgb_folder_and_reports_psnr_and_ssim(tmp_path, timm_weights) -> None:
    """`vaezoo bench` on a folder of RGB images with a small autoencoder-kl trained there: PSNR and SSIM are measured;
    the rFID-style distance is n/a with its reason (no feature network ships for a user's folder), and measured in
    a timm network's features with --fd-features."""
    import json

    folder = tmp_path / "discs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:16, 0:16]
    for i in range(40):
        image = np.full((16, 16, 3), 0.2)
        image[(rows - rng.uniform(4, 12)) ** 2 + (cols - rng.uniform(4, 12)) ** 2 < rng.uniform(9, 25)] = rng.uniform(0, 1, 3)
        Image.fromarray((image * 255).astype(np.uint8)).save(folder / f"d{i:02d}.png")
    small = ["--set", "block_out_channels=[8,16]", "--set", "layers_per_block=1", "--set", "norm_num_groups=4",
             "--set", "reconstruction_loss=nll", "--set", "beta=1.0"]
    result = run("bench", "autoencoder-kl", "--data", folder, "--epochs", 2, "--iw-samples", 4, *small,
                 "--out", tmp_path / "bench", "--quiet")
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    record, notes = results["models"]["autoencoder-kl"], results["notes"]["autoencoder-kl"]
    assert record["status"] == "ok" and 0 < record["recon_psnr"] < 100 and 0 < record["recon_ssim"] <= 1
    assert record["recon_frechet_distance"] is None and "no shipped classifier" in notes["recon_frechet_distance"]
    assert "pass --fd-features inception_v3.tv_in1k" in notes["recon_frechet_distance"]

    result = run("bench", "autoencoder-kl", "--data", folder, "--epochs", 1, "--iw-samples", 0, *small, "--fd-features",
                 "test_resnet.r160_in1k", "--fd-weights", timm_weights, "--out", tmp_path / "fd", "--quiet")
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "fd" / "results.json").read_text())
    assert results["models"]["autoencoder-kl"]["recon_frechet_distance"] >= 0
    assert "--fd-features test_resnet.r160_in1k --fd-weights" in results["settings"]["command"]


@pytest.fixture(scope="module")
def timm_weights(tmp_path_factory) -> str:
    """A small timm network's random weights, saved as a user with network access would have them (its Hub file)."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    network = timm.create_model("test_resnet.r160_in1k", pretrained=False)
    path = tmp_path_factory.mktemp("timm") / "model.safetensors"
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(path))
    return str(path)


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # dead ReLU features of a random network
def test_the_rfid_of_an_rgb_folder_in_a_timm_networks_features(model, timm_weights) -> None:
    """--fd-features: the reconstructions' Frechet distance in the pooled features of a timm network, recomputed here
    from timm's own module (head removed, images resized and normalised by hand) and numpy's covariances."""
    import timm
    from safetensors.torch import load_file
    from scipy import linalg

    from vaezoo.bench.measure import _reconstruction_quality
    from vaezoo.data import DataSplits, TensorData
    from vaezoo.eval.feature_networks import load_feature_network

    x = torch.rand(200, 3, 33, 47)  # more images than the network's 96 features: covariances of full rank
    splits = DataSplits(TensorData(x), TensorData(x), TensorData(x), "photos", (3, 33, 47), 0, [], "made here")
    record, notes = {}, {}
    _reconstruction_quality(model, splits, load_feature_network("test_resnet.r160_in1k", timm_weights), record, notes)

    network = timm.create_model("test_resnet.r160_in1k", pretrained=False)
    network.load_state_dict(load_file(timm_weights))
    network.reset_classifier(0)
    network.eval()
    data_config = timm.data.resolve_data_config({}, model=network)  # timm's own preprocessing of this network
    mean, std = (torch.tensor(data_config[key]).view(1, 3, 1, 1) for key in ("mean", "std"))

    def features(images: torch.Tensor) -> np.ndarray:
        resized = torch.nn.functional.interpolate(images, size=data_config["input_size"][1:], mode="bilinear", antialias=True)
        with torch.no_grad():
            return network((resized - mean) / std).double().numpy()

    a, b = features(model.reconstruct(x).clamp(0, 1)), features(x)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a + cov_b - 2 * linalg.sqrtm(cov_a @ cov_b).real)
    assert record["recon_frechet_distance"] == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_bad_fd_feature_networks_are_one_line_errors(tmp_path, timm_weights) -> None:
    pickled = tmp_path / "weights.pth"
    pickled.write_bytes(b"not opened")
    for args, message in (
        (["--fd-features", "inception_v3.tv_in1", "--fd-weights", timm_weights], "did you mean 'inception_v3.tv_in1k'"),
        (["--fd-features", "test_resnet.r160_in1k", "--fd-weights", pickled], "is a pickle (.pth)"),
        (["--fd-features", "test_resnet.r160_in1k", "--fd-weights", tmp_path / "none.safetensors"], "does not exist"),
        (["--fd-features", "test_vit.r160_in1k", "--fd-weights", timm_weights], "do not fit VisionTransformer"),
        (["--fd-weights", timm_weights], "--fd-weights given without --fd-features"),
    ):
        result = run("bench", "vae-mlp", "--quick", "--epochs", 1, "--iw-samples", 0, "--out", tmp_path / "b", *args)
        assert result.exit_code == 1 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_the_feature_network_comes_from_its_timm_hub_repo_then_from_the_cache(timm_weights, tmp_path, monkeypatch) -> None:
    """Without --fd-weights the network's model.safetensors comes from the repo timm names (timm/<name>), served by the
    loopback Hub, and nothing else is fetched; offline it is read from the cache, and a cache without it is one line."""
    from hub_server import hub_server, use_loopback_hub

    from vaezoo.eval.feature_networks import load_feature_network

    x = torch.rand(3, 3, 20, 30)
    local = load_feature_network("test_resnet.r160_in1k", timm_weights).features(x)
    with hub_server() as (url, store):
        api = use_loopback_hub(monkeypatch, url, tmp_path / "cache")
        api.create_repo("timm/test_resnet.r160_in1k")
        api.upload_file(path_or_fileobj=timm_weights, path_in_repo="model.safetensors", repo_id="timm/test_resnet.r160_in1k")
        load_feature_network.cache_clear()
        assert torch.equal(load_feature_network("test_resnet.r160_in1k").features(x), local)
        fetched = {request.split("/resolve/", 1)[1].split("/", 1)[1] for request in store.requests if "/resolve/" in request}
        assert fetched == {"model.safetensors"}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    load_feature_network.cache_clear()
    assert torch.equal(load_feature_network("test_resnet.r160_in1k").features(x), local)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    load_feature_network.cache_clear()
    result = run("bench", "vae-mlp", "--quick", "--epochs", 1, "--iw-samples", 0, "--out", tmp_path / "b",
                 "--fd-features", "test_resnet.r160_in1k")
    assert result.exit_code == 1 and "timm/test_resnet.r160_in1k is not in the local Hugging Face cache" in result.output
    load_feature_network.cache_clear()


def test_fids_network_loads_from_torchvisions_weights_with_their_auxiliary_branch(tmp_path) -> None:
    """inception_v3.tv_in1k's file holds the AuxLogits branch and the ImageNet head, which the features never run:
    both are left out, every other key must fit, and the pooled features are 2048 wide at 299x299."""
    import timm
    from safetensors.torch import save_file

    from vaezoo.eval.feature_networks import load_feature_network

    torch.manual_seed(0)
    full = timm.create_model("inception_v3.tv_in1k", pretrained=False, aux_logits=True)
    state = full.state_dict()
    assert any(key.startswith("AuxLogits.") for key in state) and "fc.weight" in state
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    network = load_feature_network("inception_v3.tv_in1k", str(tmp_path / "model.safetensors"))
    assert network.input_size == (299, 299)
    x = torch.rand(2, 3, 40, 48)
    resized = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", antialias=True)
    plain = timm.create_model("inception_v3", pretrained=False, num_classes=0).eval()
    skipped = plain.load_state_dict(state, strict=False)
    assert not skipped.missing_keys and {key.split(".")[0] for key in skipped.unexpected_keys} == {"AuxLogits", "fc"}
    with torch.no_grad():
        expected = plain((resized - 0.5) / 0.5)  # tv_in1k's mean and std are 0.5
    torch.testing.assert_close(network.features(x), expected)
    state.pop("Mixed_7c.branch_pool.conv.weight")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "short.safetensors"))
    with pytest.raises(vaezoo.VAEZooError, match="missing keys Mixed_7c.branch_pool.conv.weight"):
        load_feature_network("inception_v3.tv_in1k", str(tmp_path / "short.safetensors"))
