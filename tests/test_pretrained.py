"""Weights by name: shipped tags match their cards, loading is strict and never unpickles, and the
resolution order (override -> shipped -> Hub) holds."""
from __future__ import annotations

import json
import pickle
import shutil

import pytest
import torch
from safetensors.torch import save_file

import vaezoo
from vaezoo.data import load_data
from vaezoo.errors import CheckpointError
from vaezoo.eval.evaluate import evaluate
from vaezoo.io.cards import read_card_metadata
from vaezoo.zoo.pretrained import shipped_weights_dir

SHIPPED = [t for t in vaezoo.list_models(pretrained=True) if (shipped_weights_dir(t) / "model.safetensors").is_file()]
DIGITS_TAGS = [t for t in SHIPPED if t.endswith(".digits")]
FMNIST_TAGS = [t for t in SHIPPED if t.endswith((".fmnist", ".fmnist-binarized"))]
SHAPES2D_TAGS = [t for t in SHIPPED if t.endswith(".shapes2d")]


def check_against_card(tag: str) -> None:
    model = vaezoo.create_model(tag, pretrained=True)
    card = read_card_metadata(shipped_weights_dir(tag))
    test = load_data(card["dataset"]).test
    metrics = evaluate(model, test.x, test.y if model.is_conditional else None)
    figure = "neg_elbo" if model.capabilities.elbo else "loss"  # wae has no ELBO: its card states its loss
    assert metrics[figure] == pytest.approx(card["test_metrics"][figure], rel=0.01)


def test_every_digits_tag_ships() -> None:
    assert sorted(DIGITS_TAGS) == sorted(t for t in vaezoo.list_models(pretrained=True) if t.endswith(".digits"))


@pytest.mark.parametrize("tag", DIGITS_TAGS)
def test_shipped_digits_tag_matches_its_card(tag: str) -> None:
    check_against_card(tag)


@pytest.mark.slow
@pytest.mark.parametrize("tag", FMNIST_TAGS)
def test_shipped_fmnist_tag_matches_its_card(tag: str) -> None:
    check_against_card(tag)


def test_the_disentanglement_comparison_ships_its_five_shapes2d_tags() -> None:
    assert sorted(SHAPES2D_TAGS) == [f"{name}.shapes2d" for name in ("beta-tcvae", "beta-vae", "dip-vae", "factor-vae",
                                                                      "vae-mlp")]


@pytest.mark.slow
@pytest.mark.parametrize("tag", SHAPES2D_TAGS)
def test_shipped_shapes2d_tag_matches_its_card(tag: str) -> None:
    check_against_card(tag)


def test_shipped_weights_are_small_and_half_precision() -> None:
    total = sum((shipped_weights_dir(t) / "model.safetensors").stat().st_size for t in SHIPPED)
    assert total < 30 * 2**20
    from safetensors import safe_open

    with safe_open(str(shipped_weights_dir(SHIPPED[0]) / "model.safetensors"), framework="pt") as handle:
        dtypes = {handle.get_slice(k).get_dtype() for k in handle.keys()}
    assert "F16" in dtypes and "F32" not in dtypes


@pytest.fixture
def model_dir(tmp_path):
    torch.manual_seed(0)
    model = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(1, 8, 8))
    model.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_from_pretrained_round_trips_a_directory(model_dir) -> None:
    x = torch.rand(4, 1, 8, 8)
    original = vaezoo.load_model_dir(model_dir)
    loaded = vaezoo.from_pretrained(str(model_dir))
    torch.testing.assert_close(loaded.reconstruct(x), original.reconstruct(x), rtol=0, atol=0)


def test_explicit_path_overrides_shipped_weights(model_dir) -> None:
    custom = vaezoo.create_model("vae-mlp.digits")
    custom.save_pretrained(model_dir)  # a different set of weights with the tag's architecture
    from_override = vaezoo.create_model("vae-mlp.digits", pretrained=True, pretrained_path=str(model_dir))
    shipped = vaezoo.create_model("vae-mlp.digits", pretrained=True)
    name = "decoder.net.1.weight"
    torch.testing.assert_close(from_override.state_dict()[name], custom.state_dict()[name])
    assert not torch.equal(from_override.state_dict()[name], shipped.state_dict()[name])


def test_without_shipped_weights_and_offline_the_error_is_clear(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("vaezoo.zoo.pretrained.shipped_weights_dir", lambda name: tmp_path / "nowhere" / name)
    with pytest.raises(vaezoo.PretrainedUnavailableError, match="no weights for 'vae-mlp.digits'.*HF_HUB_OFFLINE"):
        vaezoo.create_model("vae-mlp.digits", pretrained=True)


def test_strict_loading_names_missing_unexpected_and_mismatched_keys(model_dir) -> None:
    weights = dict(vaezoo.load_model_dir(model_dir).state_dict())
    weights.pop("posterior_head.linear.bias")
    weights["extra.weight"] = torch.zeros(2)
    weights["decoder.net.1.weight"] = torch.zeros(3, 3)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(model_dir / "model.safetensors"))
    with pytest.raises(CheckpointError) as error:
        vaezoo.load_model_dir(model_dir)
    message = str(error.value)
    assert "missing keys posterior_head.linear.bias" in message and "unexpected keys extra.weight" in message
    assert "decoder.net.1.weight (3, 3) vs model (64, 32)" in message and "\n" not in message


def test_weights_of_another_variant_are_refused(model_dir, tmp_path) -> None:
    other = vaezoo.create_model("beta-vae", preset="tiny", input_shape=(1, 8, 8))
    other.save_pretrained(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "model.safetensors", model_dir / "model.safetensors")
    with pytest.raises(CheckpointError, match="do not fit VanillaVAE"):
        vaezoo.load_model_dir(model_dir)


def test_truncated_and_pickled_files_are_clear_errors(model_dir) -> None:
    weights = model_dir / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        vaezoo.load_model_dir(model_dir)
    weights.write_bytes(pickle.dumps({"weight": [1, 2, 3]}))  # a pickle renamed to .safetensors
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        vaezoo.load_model_dir(model_dir)
    weights.unlink()
    (model_dir / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": 1}))
    with pytest.raises(CheckpointError, match="vaezoo loads safetensors only"):
        vaezoo.from_pretrained(str(model_dir))
    with pytest.raises(CheckpointError, match="pickle-format file: vaezoo loads safetensors only"):
        vaezoo.from_pretrained(str(model_dir / "pytorch_model.bin"))


def test_bad_config_json_is_a_clear_error(model_dir) -> None:
    (model_dir / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="is not valid JSON"):
        vaezoo.load_model_dir(model_dir)
    (model_dir / "config.json").write_text(json.dumps({"architecture": "flow-vae", "config": {}}))
    with pytest.raises(vaezoo.UnknownModelError, match="unknown model 'flow-vae'"):
        vaezoo.load_model_dir(model_dir)


def test_unknown_sources_and_tags() -> None:
    with pytest.raises(vaezoo.VAEZooError, match="not a model directory, an hf-hub:ORG/NAME id or a registry tag"):
        vaezoo.from_pretrained("no/such/dir")
    with pytest.raises(vaezoo.UnknownModelError, match="did you mean 'hvae.digits'"):
        vaezoo.from_pretrained("hvae.digit")


def test_pretrained_overrides_must_keep_shapes() -> None:
    model = vaezoo.create_model("hvae.digits", pretrained=True, kl_warmup_steps=10)
    assert model.config.kl_warmup_steps == 10
    with pytest.raises(CheckpointError, match="shape mismatches"):
        vaezoo.create_model("vae-mlp.digits", pretrained=True, latent_dim=3)


def test_a_variant_saves_and_loads_by_its_class_without_the_registry(tmp_path) -> None:
    """A model knows its registry name from its class, so one built from its config class saves and loads."""
    from vaezoo_plugins.hvae import HierarchicalVAE, HierarchicalVAEConfig
    from vaezoo_plugins.vae_mlp import VanillaVAE

    config = HierarchicalVAEConfig(input_shape=(16,), latent_dims=(4, 2), hidden_dim=16, hidden_dims=(16,))
    model = HierarchicalVAE(config).eval()
    model.save_pretrained(tmp_path / "hvae")
    assert json.loads((tmp_path / "hvae" / "config.json").read_text())["architecture"] == "hvae"
    assert (tmp_path / "hvae" / "README.md").is_file()  # ModelHubMixin's card, with vaezoo's metadata
    x = torch.rand(3, 16)
    for loaded in (HierarchicalVAE.from_pretrained(tmp_path / "hvae"), vaezoo.from_pretrained(tmp_path / "hvae")):
        assert type(loaded) is HierarchicalVAE and loaded.config == config and loaded.model_name == "hvae"
        assert torch.equal(loaded.reconstruct(x), model.reconstruct(x))
    with pytest.raises(vaezoo.CheckpointError, match="holds a 'hvae' model, not 'vae-mlp'"):
        VanillaVAE.from_pretrained(tmp_path / "hvae")
    with pytest.raises(vaezoo.CheckpointError, match="use vaezoo.from_pretrained"):
        vaezoo.VAE.from_pretrained(tmp_path / "hvae")

    class Unnamed(VanillaVAE):
        """A subclass does not inherit its parent's name: it would reload as the parent."""

    with pytest.raises(vaezoo.CheckpointError, match="Unnamed has no registry_name"):
        Unnamed(VanillaVAE.config_class(input_shape=(16,))).save_pretrained(tmp_path / "unnamed")
    assert vaezoo.create_model("vae-mlp.digits", pretrained=True).model_name == "vae-mlp.digits"


def test_from_pretrained_treats_keywords_alike_for_a_folder_and_a_tag(tmp_path) -> None:
    """A folder once ignored every keyword (latent_dim=3 loaded the saved size; typos passed); now it acts as a tag does."""
    folder = tmp_path / "model"
    vaezoo.from_pretrained("vae-mlp.digits").save_pretrained(folder)
    for source in ("vae-mlp.digits", str(folder)):
        assert vaezoo.from_pretrained(source, kl_warmup_steps=7).config.kl_warmup_steps == 7  # keeps the shapes: honoured
        assert vaezoo.from_pretrained(source, preset="tiny", hidden_dims=(256,), latent_dim=8).config.hidden_dims == (256,)
        with pytest.raises(CheckpointError, match="shape mismatches"):
            vaezoo.from_pretrained(source, latent_dim=3)  # changes the weights' shapes: refused, naming them
        with pytest.raises(vaezoo.ConfigError, match="unknown config field 'latnt_dim'.*did you mean 'latent_dim'"):
            vaezoo.from_pretrained(source, latnt_dim=3)
    with pytest.raises(vaezoo.ConfigError, match="pretrained_path= chooses where .* drop it"):
        vaezoo.from_pretrained(str(folder), pretrained_path=str(folder))


def _tiny_saved(folder, seed: int):
    torch.manual_seed(seed)
    model = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(16,)).eval()
    model.save_pretrained(folder)
    return model


def test_save_pretrained_replaces_the_folder_whole_and_keeps_other_files(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "model"
    first = _tiny_saved(folder, seed=0)
    (folder / "notes.txt").write_text("mine")
    (folder / "README.md").write_text("# my own card\n")
    second = _tiny_saved(folder, seed=1)
    x = torch.rand(4, 16)
    assert torch.equal(vaezoo.load_model_dir(folder).reconstruct(x), second.reconstruct(x))
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "README.md").read_text() == "# my own card\n"
    # A failure after the new weights are written, before the new config.json: the old model is still there, whole.
    import vaezoo.io.model_dir as model_dir

    def full_disk(path, data):
        raise vaezoo.StorageError(f"cannot write {path}: the disk is full")

    monkeypatch.setattr(model_dir, "atomic_write_json", full_disk)
    torch.manual_seed(2)
    with pytest.raises(vaezoo.StorageError, match="the disk is full"):
        vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(16,)).save_pretrained(folder)
    assert torch.equal(vaezoo.load_model_dir(folder).reconstruct(x), second.reconstruct(x))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging folder left behind
    assert not torch.equal(first.reconstruct(x), second.reconstruct(x))


@pytest.mark.slow
def test_a_sigkill_inside_save_pretrained_leaves_the_old_model_loadable(tmp_path) -> None:
    """It could leave new weights beside the old config.json, and the folder no longer loaded."""
    import signal
    import subprocess
    import sys

    folder = tmp_path / "model"
    old = _tiny_saved(folder, seed=0)
    child = (
        "import os, signal, torch, vaezoo, vaezoo.io.model_dir as model_dir\n"
        "model_dir.atomic_write_json = lambda path, data: os.kill(os.getpid(), signal.SIGKILL)\n"
        "torch.manual_seed(5)\n"
        "vaezoo.create_model('vae-mlp', preset='tiny', input_shape=(16,)).save_pretrained(%r)\n" % str(folder)
    )
    killed = subprocess.run([sys.executable, "-c", child], capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    x = torch.rand(4, 16)
    assert torch.equal(vaezoo.load_model_dir(folder).reconstruct(x), old.reconstruct(x))
    new = _tiny_saved(folder, seed=6)  # the next save clears what the killed one left beside the folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert torch.equal(vaezoo.load_model_dir(folder).reconstruct(x), new.reconstruct(x))


def test_a_tag_fetched_from_the_hub_is_fetched_with_the_callers_token(monkeypatch, model_dir) -> None:
    """A gated repo (autoencoder-kl.sd3, .flux) needs the token given to load_pretrained; it used to be dropped."""
    import vaezoo.zoo.pretrained as pretrained

    calls = []

    def fake_download(repo_id, revision=None, **options):
        calls.append((repo_id, options.get("token")))
        return model_dir

    monkeypatch.setattr(pretrained, "download_model_dir", fake_download)
    pretrained.load_pretrained("vae-mlp.digits", pretrained_cfg={"hf_hub_id": "someone/gated-vae"}, token="hf_secret")
    assert calls == [("someone/gated-vae", "hf_secret")]


def test_a_card_calls_a_model_without_an_elbo_an_autoencoder_not_a_variational_one() -> None:
    from vaezoo.io.cards import card_text_for

    wae = card_text_for(name="wae.fmnist", dataset="fashion-mnist", metrics={"recon": 208.1, "loss": 208.2}, command="x")
    vae = card_text_for(name="vae-mlp.fmnist", dataset="fashion-mnist", metrics={"neg_elbo": 239.5}, command="x")
    assert "A `wae` autoencoder trained by vaezoo on fashion-mnist." in wae
    assert "A `vae-mlp` variational autoencoder trained by vaezoo on fashion-mnist." in vae
