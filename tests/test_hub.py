"""Push to and pull from a Hub: the real, unmodified huggingface_hub client against a loopback server.

tests/hub_server.py answers the requests huggingface_hub makes; nothing of huggingface_hub is mocked.
huggingface_hub reads HF_ENDPOINT, HF_HUB_OFFLINE and HF_HUB_CACHE once, at import; vaezoo.io.hub reads
them at each call and hands them to the client (endpoint=, local_files_only=, cache_dir=), so these
tests set them with monkeypatch in-process. test_a_fresh_process_reads_the_environment checks the
other path, where the variables are set before huggingface_hub is imported (as for the CLI).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from hub_server import TOKEN, hub_server
from huggingface_hub import constants as hf_constants

import vaezoo
from vaezoo.errors import CheckpointError, HubError
from vaezoo.io.hub import download_model_dir, parse_hub_source
from vaezoo.zoo.builder import load_model_dir, save_model_dir
from vaezoo.zoo.publish import push_to_hub

pytestmark = pytest.mark.skipif(
    hf_constants.HF_HUB_OFFLINE,
    reason="HF_HUB_OFFLINE was set when huggingface_hub was imported: its client then refuses every request, "
           "even to the loopback test Hub",
)

REPO = "vaezoo-test/vae-mlp-tiny"
PUBLISHED = ("config.json", "model.safetensors", "README.md")
CARD = "---\nlicense: apache-2.0\nlibrary_name: vaezoo\ntags: [vae]\n---\n# vae-mlp (tiny)\n\nA test card.\n"


def make_model_dir(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(1, 8, 8))
    save_model_dir(model, folder)
    (folder / "README.md").write_text(CARD, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run-folder-like model directory: the three published files plus things that must stay home."""
    folder = make_model_dir(tmp_path_factory.mktemp("model"))
    (folder / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.safetensors").write_bytes(b"not published")
    return folder


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One HF_HOME for the module: hf_xet opens one session per process and keeps its log under HF_HOME/xet.
    return tmp_path_factory.mktemp("hf_home")


@pytest.fixture
def hub(hf_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh loopback Hub; HF_ENDPOINT points at it and the cache is this test's own."""
    with hub_server() as (url, store):
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.setenv("HF_HOME", str(hf_home))
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
                     "HUGGINGFACE_HUB_CACHE"):
            monkeypatch.delenv(name, raising=False)
        yield url, store
        assert store.unhandled == [], f"the client asked for endpoints the test hub lacks: {store.unhandled}"


def one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


def reconstructions(folder: Path) -> torch.Tensor:
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    return load_model_dir(folder).reconstruct(x)


def test_push_then_download_is_bit_exact(hub, model_dir: Path) -> None:
    url, store = hub
    commit_url = push_to_hub(model_dir, REPO, token=TOKEN)

    head = store.repos[REPO].branches["main"]
    assert commit_url == f"{url}/{REPO}/commit/{head}"
    assert set(store.files(REPO)) == {".gitattributes", *PUBLISHED}  # metrics and checkpoints stay home
    # The client took the plain path: inline base64 in the commit, neither LFS nor Xet.
    assert f"POST /api/models/{REPO}/preupload/main" in store.requests
    assert f"POST /api/models/{REPO}/commit/main" in store.requests

    folder = download_model_dir(REPO)
    assert folder.name == head  # the snapshot folder of the pushed commit
    assert sorted(p.name for p in folder.iterdir()) == sorted(PUBLISHED)
    for name in PUBLISHED:
        assert (folder / name).read_bytes() == (model_dir / name).read_bytes(), name
    assert torch.equal(reconstructions(folder), reconstructions(model_dir))


def test_pushing_unchanged_files_makes_no_commit(hub, model_dir: Path) -> None:
    _, store = hub
    first = push_to_hub(model_dir, REPO, token=TOKEN)
    second = push_to_hub(model_dir, REPO, token=TOKEN)
    assert first == second
    assert len(store.repos[REPO].commits) == 2  # the repo's initial commit and the one push


def test_push_to_a_branch_and_pull_that_revision(hub, model_dir: Path, tmp_path: Path) -> None:
    _, store = hub
    other = make_model_dir(tmp_path / "other", seed=1)
    push_to_hub(model_dir, REPO, token=TOKEN)
    push_to_hub(other, REPO, revision="v2", token=TOKEN, commit_message="retrained")

    assert set(store.repos[REPO].branches) == {"main", "v2"}
    on_main, on_v2 = download_model_dir(REPO), download_model_dir(REPO, "v2")
    assert on_main != on_v2
    assert (on_v2 / "model.safetensors").read_bytes() == (other / "model.safetensors").read_bytes()
    assert (on_main / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()
    assert torch.equal(reconstructions(on_v2), reconstructions(other))
    assert not torch.equal(reconstructions(on_v2), reconstructions(model_dir))
    # A commit sha is a revision too.
    assert download_model_dir(REPO, on_v2.name) == on_v2


def test_private_repo_needs_the_token(hub, model_dir: Path) -> None:
    _, store = hub
    push_to_hub(model_dir, REPO, private=True, token=TOKEN)
    assert store.repos[REPO].private

    with pytest.raises(HubError) as error:
        download_model_dir(REPO)
    message = one_line(error)
    assert REPO in message and "--token" in message

    folder = download_model_dir(REPO, token=TOKEN)
    assert (folder / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()


def test_missing_repo_and_missing_revision_are_named(hub, model_dir: Path) -> None:
    url, _ = hub
    with pytest.raises(HubError) as error:
        download_model_dir("vaezoo-test/no-such-model")
    message = one_line(error)
    assert "vaezoo-test/no-such-model was not found on " + url in message

    push_to_hub(model_dir, REPO, token=TOKEN)
    with pytest.raises(HubError) as error:
        download_model_dir(REPO, "no-such-branch")
    message = one_line(error)
    assert REPO in message and "'no-such-branch'" in message and "leave it out for main" in message


def test_the_card_is_optional(hub, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "no-card"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(model_dir / name, folder / name)
    push_to_hub(folder, REPO, token=TOKEN)
    downloaded = download_model_dir(REPO)
    assert sorted(p.name for p in downloaded.iterdir()) == ["config.json", "model.safetensors"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert download_model_dir(REPO) == downloaded


def test_repo_without_model_files_is_not_a_model_repo(hub) -> None:
    from huggingface_hub import HfApi

    url, _ = hub
    HfApi(endpoint=url, token=TOKEN).create_repo("vaezoo-test/empty")  # holds only .gitattributes
    with pytest.raises(HubError, match="has no config.json, so it is not a vaezoo model repo") as error:
        download_model_dir("vaezoo-test/empty")
    one_line(error)


def test_offline_serves_the_cache_and_names_what_is_missing(hub, model_dir: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _, store = hub
    push_to_hub(model_dir, REPO, revision="v1", token=TOKEN)
    online = download_model_dir(REPO, "v1")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    requests_before = len(store.requests)
    assert download_model_dir(REPO, "v1") == online
    assert download_model_dir(REPO, online.name) == online
    assert torch.equal(reconstructions(online), reconstructions(model_dir))
    assert len(store.requests) == requests_before  # not one request while offline

    with pytest.raises(HubError) as error:
        download_model_dir("vaezoo-test/never-downloaded")
    assert one_line(error).startswith(
        "vaezoo-test/never-downloaded is not in the local Hugging Face cache (")
    assert "HF_HUB_OFFLINE=1; run once online or unset HF_HUB_OFFLINE" in str(error.value)
    with pytest.raises(HubError, match="not in the local Hugging Face cache"):
        download_model_dir(REPO, "main")  # cached: v1 only

    with pytest.raises(HubError, match=r"while HF_HUB_OFFLINE=1; unset it$"):
        push_to_hub(model_dir, REPO, token=TOKEN)
    assert len(store.requests) == requests_before


@pytest.mark.parametrize("pickle_name", ["pytorch_model.bin", "model.pt", "weights.pth", "state.pkl", "last.ckpt"])
def test_push_refuses_a_folder_with_pickles(hub, model_dir: Path, tmp_path: Path, pickle_name: str) -> None:
    _, store = hub
    folder = tmp_path / "with-pickle"
    shutil.copytree(model_dir, folder)
    (folder / pickle_name).write_bytes(b"\x80\x04N.")  # pickle.dumps(None)
    with pytest.raises(HubError, match="vaezoo publishes safetensors only") as error:
        push_to_hub(folder, REPO, token=TOKEN)
    assert pickle_name in one_line(error)
    assert store.requests == []  # refused before any request


def test_push_refuses_a_folder_that_is_not_a_model_directory(hub, model_dir: Path, tmp_path: Path) -> None:
    _, store = hub
    with pytest.raises(CheckpointError, match="has no config.json"):
        push_to_hub(tmp_path, REPO, token=TOKEN)
    folder = tmp_path / "mismatch"
    shutil.copytree(model_dir, folder)
    wider = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(1, 8, 8), latent_dim=5)
    save_model_dir(wider, tmp_path / "wider")
    shutil.copy(tmp_path / "wider" / "model.safetensors", folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="do not fit"):
        push_to_hub(folder, REPO, token=TOKEN)
    assert store.requests == []


def test_push_without_a_write_token_is_refused(hub, model_dir: Path) -> None:
    url, _ = hub
    with pytest.raises(HubError) as error:
        push_to_hub(model_dir, REPO)  # no token: HF_TOKEN is unset, and the server knows no other token
    assert one_line(error).startswith(f"not authorised to write {REPO} on {url} (")
    assert "pass --token or run `hf auth login`" in str(error.value)


def test_unreachable_hub_is_named(hub, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(HubError) as error:
        push_to_hub(model_dir, REPO, token=TOKEN)
    message = one_line(error)
    assert message.startswith(f"cannot reach the Hub at http://127.0.0.1:{port}: ")
    assert message.endswith("check the network or HF_ENDPOINT")


def test_bad_repo_ids_are_refused_before_any_request(hub, model_dir: Path) -> None:
    _, store = hub
    with pytest.raises(HubError, match="add the user or organisation"):
        push_to_hub(model_dir, "vae-mlp-tiny", token=TOKEN)
    with pytest.raises(HubError, match="not a branch, tag or commit"):
        download_model_dir(REPO, "bad revision")
    assert store.requests == []


@pytest.mark.parametrize(("source", "expected"), [
    ("hf-hub:my-org/vae-digits", ("my-org/vae-digits", None)),
    ("hf-hub:my-org/vae-digits@v1", ("my-org/vae-digits", "v1")),
    ("hf-hub:My_Org/vae.mlp-2@refs/pr/3", ("My_Org/vae.mlp-2", "refs/pr/3")),
    ("hf-hub:a/b@" + "0" * 40, ("a/b", "0" * 40)),
])
def test_parse_hub_source(source: str, expected: tuple[str, str | None]) -> None:
    assert parse_hub_source(source) == expected


@pytest.mark.parametrize(("source", "says"), [
    ("my-org/vae-digits", "is not a Hub source; write hf-hub:ORG/NAME"),
    ("hf://my-org/vae-digits", "is not a Hub source"),
    ("hf-hub:vae-digits", "add the user or organisation: ORG/NAME"),
    ("hf-hub:my-org/vae-digits@", "has nothing after '@'"),
    ("hf-hub:my-org//vae-digits", "is not a Hub repo id"),
    ("hf-hub:my-org/vae digits", "is not a Hub repo id"),
    ("hf-hub:my-org/vae--digits", "no '--' or '..'"),
    ("hf-hub:a/b/c", "is not a Hub repo id"),
    ("hf-hub:-org/name", "is not a Hub repo id"),
    ("hf-hub:my-org/vae-digits@v 1", "is not a branch, tag or commit name"),
    ("hf-hub:my-org/vae-digits@../main", "is not a branch, tag or commit name"),
])
def test_parse_hub_source_errors(source: str, says: str) -> None:
    with pytest.raises(HubError) as error:
        parse_hub_source(source)
    message = one_line(error)
    assert says in message and repr(source) in message, message


@pytest.mark.slow  # two fresh interpreters importing torch: about 6 s
def test_a_fresh_process_reads_the_environment(hub, model_dir: Path, tmp_path: Path) -> None:
    """As the CLI runs: HF_ENDPOINT / HF_HUB_CACHE / HF_HUB_OFFLINE set before huggingface_hub is imported."""
    url, store = hub
    push_to_hub(model_dir, REPO, token=TOKEN)
    script = textwrap.dedent(f"""
        import sys
        from huggingface_hub import constants
        from vaezoo.io.hub import download_model_dir
        assert constants.ENDPOINT == {url!r}, constants.ENDPOINT
        print(download_model_dir({REPO!r}))
    """)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "fresh-cache")}  # HF_ENDPOINT is the loopback hub's
    online = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert online.returncode == 0, online.stderr
    folder = Path(online.stdout.strip().splitlines()[-1])
    assert (folder / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()

    requests_before = len(store.requests)
    offline = subprocess.run([sys.executable, "-c", script], env={**env, "HF_HUB_OFFLINE": "1"},
                             capture_output=True, text=True, timeout=120)
    assert offline.returncode == 0, offline.stderr
    assert Path(offline.stdout.strip().splitlines()[-1]) == folder
    assert len(store.requests) == requests_before


def test_cli_push_then_eval_and_create_model_from_the_hub(hub, tmp_path: Path) -> None:
    """A run folder trained by vaezoo, published with `vaezoo push`, evaluated back as `hf-hub:ORG/NAME`."""
    from click.testing import CliRunner

    import vaezoo
    from vaezoo.cli import main
    from vaezoo.data import load_data

    run = tmp_path / "run"
    torch.manual_seed(0)
    vaezoo.train(vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(1, 8, 8)), load_data("digits"),
                 out_dir=run, epochs=2, progress=False)
    assert (run / "README.md").is_file()  # the run folder carries a card with its validation figures
    runner = CliRunner()
    pushed = runner.invoke(main, ["push", str(run), "--repo-id", REPO, "--token", TOKEN, "--revision", "v1"])
    assert pushed.exit_code == 0, pushed.output
    assert pushed.output.startswith(f"pushed {run} to {REPO}@v1: ")
    local = runner.invoke(main, ["eval", str(run), "--data", "digits", "--iw-samples", "20", "--json"])
    remote = runner.invoke(main, ["eval", f"hf-hub:{REPO}@v1", "--data", "digits", "--iw-samples", "20", "--json"])
    assert local.exit_code == 0 and remote.exit_code == 0, remote.output
    local_metrics, remote_metrics = json.loads(local.output), json.loads(remote.output)
    for key in ("neg_elbo", "recon", "kl", "nll"):
        assert local_metrics[key] == remote_metrics[key]
    model = vaezoo.create_model(f"hf-hub:{REPO}@v1")
    assert model.config == vaezoo.load_model_dir(run).config
    missing = runner.invoke(main, ["eval", "hf-hub:nobody/nothing", "--data", "digits"])
    assert missing.exit_code == 1 and len(missing.output.strip().splitlines()) == 1


def test_a_tag_resolves_to_its_hub_repo_when_no_weights_ship(hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Resolution order, last step: no override, nothing shipped -> the tag's hf_hub_id through the cache."""
    import vaezoo

    published = vaezoo.create_model("vae-mlp.digits")
    published.save_pretrained(tmp_path / "published")
    push_to_hub(tmp_path / "published", "vaezoo/vae-mlp.digits", token=TOKEN)
    monkeypatch.setattr("vaezoo.zoo.pretrained.shipped_weights_dir", lambda name: tmp_path / "not-shipped" / name)
    loaded = vaezoo.create_model("vae-mlp.digits", pretrained=True)
    name = "decoder.net.1.weight"
    assert torch.equal(loaded.state_dict()[name], published.state_dict()[name])
    # A pretrained_cfg overlay naming another repo wins over the tag's own.
    push_to_hub(tmp_path / "published", "someone/elsewhere", token=TOKEN)
    overlay = vaezoo.create_model("vae-mlp.digits", pretrained=True, pretrained_cfg={"hf_hub_id": "someone/elsewhere"})
    assert torch.equal(overlay.state_dict()[name], published.state_dict()[name])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # now served from the cache alone
    assert torch.equal(vaezoo.create_model("vae-mlp.digits", pretrained=True).state_dict()[name], published.state_dict()[name])


def test_a_model_pushes_itself_and_its_class_loads_it_back_through_the_mixin(hub, tmp_path: Path) -> None:
    """VAE.push_to_hub and VAE.from_pretrained go through ModelHubMixin's hooks, strictly and safetensors only."""
    from vaezoo_plugins.vae_mlp import VanillaVAE, VanillaVAEConfig

    torch.manual_seed(3)
    model = VanillaVAE(VanillaVAEConfig(input_shape=(1, 8, 8), hidden_dims=(16,), latent_dim=3)).eval()
    model.push_to_hub(REPO, token=TOKEN, card_metrics={"neg_elbo": 1.5}, dataset="digits")
    _, store = hub
    assert set(store.files(REPO)) == {".gitattributes", *PUBLISHED}
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for source in (REPO, f"hf-hub:{REPO}", f"hf-hub:{REPO}@main"):
        loaded = VanillaVAE.from_pretrained(source)
        assert loaded.config == model.config and loaded.model_name == "vae-mlp"
        assert torch.equal(loaded.reconstruct(x), model.reconstruct(x)), source
    requests = len(store.requests)
    assert VanillaVAE.from_pretrained(REPO, local_files_only=True).config == model.config  # from the cache alone
    assert len(store.requests) == requests
    with pytest.raises(HubError):
        VanillaVAE.from_pretrained("vaezoo-test/never-downloaded", local_files_only=True)
    card = (download_model_dir(REPO) / "README.md").read_text()
    assert "library_name: vaezoo" in card and "digits" in card and "neg_elbo" in card
    from vaezoo_plugins.cvae import ConditionalVAE

    with pytest.raises(CheckpointError, match="holds a 'vae-mlp' model, not 'cvae'"):
        ConditionalVAE.from_pretrained(REPO)


def test_push_refuses_a_published_file_that_links_out_of_the_folder(hub, tmp_path: Path) -> None:
    """`vaezoo push` followed a symlinked README.md out of the folder and uploaded its target."""
    _, store = hub
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the Hub")
    folder = make_model_dir(tmp_path / "model")
    (folder / "README.md").unlink()
    (folder / "README.md").symlink_to(secret)
    with pytest.raises(HubError, match="README.md is a link to .*secret.txt, outside"):
        push_to_hub(folder, REPO, token=TOKEN)
    assert REPO not in store.repos
    inside = folder / "card-source.md"  # a link that stays inside the folder is fine
    inside.write_text(CARD)
    (folder / "README.md").unlink()
    (folder / "README.md").symlink_to(inside)
    push_to_hub(folder, REPO, token=TOKEN)
    assert "README.md" in store.files(REPO)


def closed_port() -> int:
    with socket.socket() as sock:  # bound, never listening: a connection to it is refused
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_hub_fails_within_seconds_with_the_offline_hint(hub, model_dir: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """No network and no HF_HUB_OFFLINE: the cache serves what it holds, anything else fails at once in one line
    (huggingface_hub alone retries for about 24 s, logging each retry)."""
    from click.testing import CliRunner

    from vaezoo.cli import main

    push_to_hub(model_dir, REPO, token=TOKEN)
    cached = download_model_dir(REPO)
    port = closed_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    start = time.perf_counter()
    assert download_model_dir(REPO) == cached
    with pytest.raises(HubError) as error:
        download_model_dir("vaezoo-test/never-downloaded")
    assert time.perf_counter() - start < 5
    message = one_line(error)
    assert message.startswith(f"cannot reach the Hub at http://127.0.0.1:{port} (")
    assert message.endswith("or work offline: set HF_HUB_OFFLINE=1 and load a local model folder or a registry tag")
    start = time.perf_counter()
    result = CliRunner().invoke(main, ["eval", "hf-hub:vaezoo-test/never-downloaded", "--data", "digits"])
    assert time.perf_counter() - start < 5
    assert result.exit_code == 1 and result.stderr.strip().splitlines() == [f"error: {message}"]


def test_info_and_eval_take_a_hub_id_like_a_folder(hub, tmp_path: Path) -> None:
    """`vaezoo info hf-hub:...` shows the repo's own config and data; eval without --data uses that data."""
    from click.testing import CliRunner

    from vaezoo.cli import main

    run, runner = tmp_path / "run", CliRunner()
    trained = runner.invoke(main, ["train", "vae-mlp", "--data", "digits", "--epochs", "1", "--quiet", "--split-seed", "2",
                                   "--set", "latent_dim=2", "--set", "hidden_dims=[16]", "--out", str(run)])
    assert trained.exit_code == 0, trained.output
    push_to_hub(run, REPO, token=TOKEN)
    info = runner.invoke(main, ["info", f"hf-hub:{REPO}", "--json"])
    assert info.exit_code == 0, info.output
    described = json.loads(info.stdout)
    assert described["config"]["latent_dim"] == 2 and described["data"]["split_seed"] == 2
    assert (described["name"], described["class"]) == (f"hf-hub:{REPO}", "vaezoo_plugins.vae_mlp.VanillaVAE")
    text = runner.invoke(main, ["info", f"hf-hub:{REPO}"])
    assert text.exit_code == 0 and "  trained on    digits (split seed 2)" in text.stdout
    remote = json.loads(runner.invoke(main, ["eval", f"hf-hub:{REPO}", "--iw-samples", "0", "--json"]).stdout)
    local = json.loads(runner.invoke(main, ["eval", str(run), "--iw-samples", "0", "--json"]).stdout)
    assert (remote["data"], remote["split_seed"]) == ("digits", 2) and remote["neg_elbo"] == local["neg_elbo"]
