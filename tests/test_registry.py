"""The registry: names, tags, entry-point discovery, isolation of broken plugins, conflicts."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

import vaezoo
from vaezoo.zoo.registry import REGISTRY

FIXTURE = Path(__file__).parent / "fixtures" / "toy_plugin"
BUILTINS = ["autoencoder-kl", "beta-tcvae", "beta-vae", "cvae", "dip-vae", "factor-vae", "hvae", "iaf-vae", "info-vae", "iwae", "miwae", "vae-mlp",
            "vamp-vae", "vdvae", "vq-vae", "wae"]


def make_distribution(site: Path, name: str, entry_points: dict[str, str]) -> None:
    """Write a minimal installed distribution (a .dist-info folder) that declares entry points."""
    info = site / f"{name.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    lines = "\n".join(f"{key} = {value}" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[vaezoo.models]\n{lines}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A fresh site directory on sys.path; the registry rescans before and after the test."""
    monkeypatch.syspath_prepend(str(tmp_path))
    REGISTRY.refresh()
    yield tmp_path
    monkeypatch.undo()
    REGISTRY.refresh()


def test_builtins_are_listed_through_entry_points() -> None:
    assert vaezoo.list_models() == BUILTINS
    assert {REGISTRY.entries[name].distribution for name in BUILTINS} == {"vaezoo"}
    assert vaezoo.list_models("*vae") == ["beta-tcvae", "beta-vae", "cvae", "dip-vae", "factor-vae", "hvae", "iaf-vae",
                                          "info-vae", "vamp-vae", "vdvae", "vq-vae"]
    assert vaezoo.list_models("v?-*") == ["vq-vae"]


def test_listing_names_imports_no_plugin() -> None:
    code = "import sys, vaezoo; vaezoo.list_models(); print(sorted(m for m in sys.modules if m.startswith('vaezoo_plugins.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(vaezoo.UnknownModelError, match=r"unknown model 'vae-mpl' \(did you mean 'vae-mlp'"):
        vaezoo.create_model("vae-mpl")
    assert not vaezoo.is_model("vae-mpl")


def test_tags_select_a_pretrained_config() -> None:
    tags = vaezoo.list_models(pretrained=True)
    assert "vae-mlp.fmnist" in tags and "vae-mlp.digits" in tags
    assert vaezoo.list_models("*.digits", pretrained=True) == [t for t in tags if t.endswith(".digits")]
    model = vaezoo.create_model("vae-mlp.digits")
    assert model.config.input_shape == (1, 8, 8)
    assert vaezoo.is_model("vae-mlp.digits") and not vaezoo.is_model("vae-mlp.imagenet")
    with pytest.raises(vaezoo.UnknownModelError, match="vae-mlp.fmnist"):
        vaezoo.create_model("vae-mlp.fmnst")


def test_pretrained_without_any_weights_is_a_clear_error(site) -> None:
    from vaezoo_plugins.vae_mlp import VanillaVAE

    class UnpublishedVAE(VanillaVAE):
        """A variant whose tag ships no weights and names no Hub repo."""

        pretrained_tags = {"mine": vaezoo.PretrainedTag({"input_shape": (1, 8, 8)}, dataset="digits")}

    class TaglessVAE(VanillaVAE):
        """A variant with no pretrained tags at all."""

        pretrained_tags = {}

    vaezoo.register_model(UnpublishedVAE, "unpublished-vae")
    vaezoo.register_model(TaglessVAE, "tagless-vae")
    assert vaezoo.list_models("unpublished*", pretrained=True) == ["unpublished-vae.mine"]
    with pytest.raises(vaezoo.PretrainedUnavailableError, match="no weights for 'unpublished-vae.mine'.*pretrained_path="):
        vaezoo.create_model("unpublished-vae.mine", pretrained=True)
    with pytest.raises(vaezoo.PretrainedUnavailableError, match="'tagless-vae' has no pretrained tags"):
        vaezoo.create_model("tagless-vae", pretrained=True)


def test_overrides_presets_and_bad_fields() -> None:
    model = vaezoo.create_model("vae-mlp", latent_dim=3, hidden_dims=[64])
    assert model.config.latent_dim == 3 and model.config.hidden_dims == (64,)
    assert vaezoo.create_model("vae-mlp", preset="tiny").config.hidden_dims == (32,)
    with pytest.raises(vaezoo.ConfigError, match=r"unknown config field 'latent_dims'.*did you mean 'latent_dim'"):
        vaezoo.create_model("vae-mlp", latent_dims=3)
    with pytest.raises(vaezoo.ConfigError, match="latent_dim=-1 must be a positive integer"):
        vaezoo.create_model("vae-mlp", latent_dim=-1)
    with pytest.raises(vaezoo.ConfigError, match="beta=-1.0 must be >= 0"):
        vaezoo.create_model("beta-vae", beta=-1)
    with pytest.raises(vaezoo.ConfigError, match="expected an integer"):
        vaezoo.create_model("vae-mlp", latent_dim="ten")
    with pytest.raises(vaezoo.ConfigError, match="unknown preset 'tiyn'.*did you mean 'tiny'"):
        vaezoo.create_model("vae-mlp", preset="tiyn")


def test_model_info() -> None:
    info = vaezoo.model_info("cvae")
    assert info["distribution"] == "vaezoo" and info["conditional"] is True
    assert info["parameters"] == vaezoo.create_model("cvae").num_parameters()
    assert info["config"]["num_classes"] == 10 and "tiny" in info["presets"]


def test_third_party_plugin_is_listed_created_and_trained(site, monkeypatch, digits) -> None:
    monkeypatch.syspath_prepend(str(FIXTURE))
    make_distribution(site, "toy-vae-plugin", {"toy-vae": "toy_vae:ToyVAE"})
    assert "toy-vae" in vaezoo.list_models()
    assert REGISTRY.entries["toy-vae"].distribution == "toy-vae-plugin"
    model = vaezoo.create_model("toy-vae")
    from conftest import fit, mean_of

    losses = fit(model, digits[0], None, steps=150)["main"]
    assert mean_of(losses, last=True) < 0.9 * mean_of(losses, last=False)


def test_broken_plugin_warns_once_and_the_rest_work(site) -> None:
    (site / "broken_vae.py").write_text("raise ImportError('needs libfoo')\n")
    make_distribution(site, "broken-plugin", {"broken-vae": "broken_vae:BrokenVAE"})
    with pytest.warns(RuntimeWarning, match=r"'broken-vae' = 'broken_vae:BrokenVAE' from distribution 'broken-plugin' failed to import: ImportError: needs libfoo"):
        tags = vaezoo.list_models(pretrained=True)
    assert "vae-mlp.digits" in tags
    with pytest.raises(vaezoo.PluginError, match="needs libfoo"):
        vaezoo.create_model("broken-vae")
    vaezoo.create_model("vae-mlp", preset="tiny")


def test_plugin_breaking_the_contract_is_refused(site) -> None:
    (site / "not_a_vae.py").write_text("class NotAVAE:\n    pass\n")
    make_distribution(site, "bad-contract", {"not-a-vae": "not_a_vae:NotAVAE"})
    with pytest.raises(vaezoo.PluginError, match="not a subclass of vaezoo.VAE"):
        vaezoo.create_model("not-a-vae")


def test_two_distributions_claiming_a_name_is_an_error_naming_both(site, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(FIXTURE))
    make_distribution(site, "first-plugin", {"toy-vae": "toy_vae:ToyVAE"})
    make_distribution(site, "second-plugin", {"toy-vae": "toy_vae:ToyVAE", "vae-mlp": "toy_vae:ToyVAE"})
    with pytest.raises(vaezoo.PluginError, match="'first-plugin'.*'second-plugin'|'second-plugin'.*'first-plugin'"):
        vaezoo.create_model("toy-vae")
    with pytest.raises(vaezoo.PluginError, match="'vaezoo'.*'second-plugin'|'second-plugin'.*'vaezoo'"):
        vaezoo.create_model("vae-mlp")


def test_autoload_switch_keeps_only_builtins(site, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(FIXTURE))
    make_distribution(site, "toy-vae-plugin", {"toy-vae": "toy_vae:ToyVAE"})
    monkeypatch.setenv("VAEZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
    REGISTRY.refresh()
    assert vaezoo.list_models() == BUILTINS


def test_register_model_at_run_time(site) -> None:
    from vaezoo_plugins.vae_mlp import VanillaVAE

    class RenamedVAE(VanillaVAE):
        """The vanilla VAE under another name."""

    vaezoo.register_model(RenamedVAE, "renamed-vae")
    assert "renamed-vae" in vaezoo.list_models()
    assert isinstance(vaezoo.create_model("renamed-vae", preset="tiny"), RenamedVAE)
    with pytest.raises(vaezoo.PluginError, match="not a subclass"):
        vaezoo.register_model(torch.nn.Linear, "linear")


@pytest.mark.slow
def test_pip_installed_plugin_is_discovered_by_the_cli(tmp_path) -> None:
    """The real thing: pip builds and installs the fixture distribution, and a fresh process sees it."""
    from conftest import pip_install_to

    target = pip_install_to(FIXTURE, tmp_path / "site")
    env = {**__import__("os").environ, "PYTHONPATH": str(target)}
    listed = subprocess.run([sys.executable, "-m", "vaezoo.cli", "list"], capture_output=True, text=True, env=env)
    assert "toy-vae" in listed.stdout and "toy-vae-plugin" in listed.stdout
    code = textwrap.dedent("""
        import torch, vaezoo
        model = vaezoo.create_model("toy-vae")
        x = torch.rand(64, 1, 8, 8)
        opt = torch.optim.Adam(model.parameters(), 1e-2)
        first = model(x).loss.item()
        for _ in range(50):
            loss = model(x).loss; opt.zero_grad(); loss.backward(); opt.step()
        print(first, model(x).loss.item())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    first, last = map(float, out.split())
    assert last < first


# --- broken plugin metadata: reported once, skipped by every listing, a one-line error by name --------
METADATA_BROKEN = {  # name -> (distribution, what its warning and error name)
    "tags-none-vae": ("tags-none-plugin", "pretrained_tags=None must be a dict"),
    "tag-dicts-vae": ("tag-dicts-plugin", "is a dict, not a vaezoo.PretrainedTag"),
    "tag-field-vae": ("tag-field-plugin", "unknown config field 'latent_size'"),
    "no-defaults-vae": ("no-defaults-plugin", "cannot build its defaults (RuntimeError: no GPU found)"),
    "dict-capabilities-vae": ("dict-capabilities-plugin", "is not a vaezoo.Capabilities"),
    "renamed-vae": ("renamed-plugin", "registry_name is 'other-name', not 'renamed-vae'"),
    "interrupting-vae": ("interrupting-plugin", "KeyboardInterrupt raised by the plugin's import itself"),
    "exiting-vae": ("os-exit-plugin", "its import called os._exit(3)"),
}
METADATA_WORKING = ["bomb-card-vae", "chatty-vae", "huge-card-vae", "number-card-vae", "unshipped-vae"]


@pytest.fixture
def broken_site(tmp_path, monkeypatch):
    """robustness_cases' site of plugins with broken metadata, on sys.path; the registry rescans before and after."""
    from robustness_cases import metadata_plugin_site

    site = metadata_plugin_site(tmp_path)
    monkeypatch.syspath_prepend(str(site))
    REGISTRY.refresh()
    yield site
    monkeypatch.undo()
    for module in [m for m in sys.modules if m.startswith("robust_")]:
        del sys.modules[module]
    REGISTRY.refresh()


def test_a_broken_plugin_is_reported_once_and_skipped_by_every_listing(broken_site) -> None:
    real_exit = os._exit
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tags = vaezoo.list_models(pretrained=True)
        again = vaezoo.list_models(pretrained=True)
        loadable = vaezoo.list_models(loadable=True)
    assert os._exit is real_exit  # put back after the plugin that called it
    trained_here = set(BUILTINS) - {"autoencoder-kl"}  # its tags are latent diffusion's weights, none trained on digits
    assert tags == again and {f"{name}.digits" for name in trained_here} <= set(tags)
    assert loadable == sorted(BUILTINS + METADATA_WORKING)
    skipped = [str(w.message) for w in caught if "it is skipped" in str(w.message)]
    assert len(skipped) == len(METADATA_BROKEN), skipped
    for name, (distribution, problem) in METADATA_BROKEN.items():
        [line] = [line for line in skipped if f"'{name}'" in line]
        assert problem in line and f"it is skipped (uninstall or upgrade {distribution!r})" in line, line
        with pytest.raises(vaezoo.PluginError) as error:
            vaezoo.create_model(name)
        assert problem in str(error.value) and str(error.value).endswith(f"uninstall or upgrade {distribution!r}")
        assert "\n" not in str(error.value)
    vaezoo.create_model("vae-mlp", preset="tiny")


def test_bench_of_every_model_skips_a_broken_plugin(broken_site, tmp_path) -> None:
    from vaezoo.bench.settings import resolve_settings

    with pytest.warns(RuntimeWarning, match="tags-none-vae.*it is skipped"):
        settings = resolve_settings(None, "digits", epochs=1, out_dir=str(tmp_path / "bench"))
    assert settings["models"] == sorted(BUILTINS + METADATA_WORKING)


def test_a_plugin_import_that_gets_a_real_ctrl_c_stops_the_program(site) -> None:
    (site / "slow_vae.py").write_text("import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(5)\n")
    (site / "self_interrupting_vae.py").write_text("raise KeyboardInterrupt\n")
    make_distribution(site, "slow-plugin", {"slow-vae": "slow_vae:SlowVAE", "self-vae": "self_interrupting_vae:V"})
    with pytest.raises(KeyboardInterrupt):  # the user's Ctrl-C during the import: not the plugin's failure
        vaezoo.create_model("slow-vae")
    with pytest.raises(vaezoo.PluginError, match="KeyboardInterrupt raised by the plugin's import itself"):
        vaezoo.create_model("self-vae")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_what_a_plugin_prints_on_import_stays_off_stdout(broken_site) -> None:
    from click.testing import CliRunner

    from vaezoo.cli import main

    with pytest.warns(RuntimeWarning, match="importing plugin 'robust_meta_chatty:ChattyVAE' printed 'hello from the plugin'"):
        result = CliRunner().invoke(main, ["info", "chatty-vae", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["name"] == "chatty-vae"  # the plugin's line no longer breaks the JSON


def test_cards_are_read_safely(broken_site) -> None:
    """A billion-laughs header is refused without expanding it; metrics that are not numbers are left out."""
    from vaezoo.io.cards import read_card_metadata
    from vaezoo.zoo.pretrained import shipped_weights_dir

    weights = broken_site / "weights"
    with pytest.warns(RuntimeWarning, match=r"README.md: it uses the YAML alias \*a0, which vaezoo does not expand"):
        assert read_card_metadata(weights / "bomb-card-vae.digits") == {}
    with pytest.warns(RuntimeWarning, match=r"test_metrics\['nll'\]='not measured', test_metrics\['neg_elbo'\]=\[1, 2\] are"):
        assert read_card_metadata(weights / "number-card-vae.digits")["test_metrics"] == {"recon": 20.5}
    with pytest.warns(RuntimeWarning, match="its YAML header does not end within 64 KB"):
        assert read_card_metadata(weights / "huge-card-vae.digits") == {}
    with pytest.warns(RuntimeWarning, match="number-card-vae.digits' by distribution 'number-card-plugin'"):
        row = vaezoo.model_info("number-card-vae.digits")["pretrained"]
    assert row["test_metrics"] == {"recon": 20.5} and row["weights"] == "none"
    shipped = read_card_metadata(shipped_weights_dir("hvae.digits"))["test_metrics"]  # vaezoo's own cards read in full
    assert {"kl_0", "kl_1", "kl_2", "neg_elbo"} <= set(shipped) and 0 < shipped["nll"] <= shipped["neg_elbo"]


def test_a_pretrained_tag_checks_its_types() -> None:
    with pytest.raises(vaezoo.ConfigError, match="PretrainedTag config=None must be a dict of field names"):
        vaezoo.PretrainedTag(None, dataset="digits")
    with pytest.raises(vaezoo.ConfigError, match="PretrainedTag dataset=3 must name the dataset"):
        vaezoo.PretrainedTag({}, dataset=3)
    assert vaezoo.PretrainedTag({"latent_dim": 8}, dataset="digits", hf_hub_id="org/name").hf_hub_id == "org/name"
