"""The catalogue of bad input and faults vaezoo must survive, shared by tests/test_robustness.py (in
process, in CI) and benchmarks/robustness.py (real CLI subprocesses, counted per category).

Every case ends in a clear error (one line on the CLI, a VAEZooError in Python) or a correct
result. A :class:`Case` is one CLI command on files its ``setup`` writes into a fresh folder
(``{tmp}`` in its arguments), optionally with the same input through the Python API. The faults
(SIGKILL at a random point of training or of a checkpoint write, a full disk, a NaN loss) run in a
child process that injects them: :data:`FAULT_CHILD`.
"""
from __future__ import annotations

import gzip
import json
import math
import os
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import vaezoo
from vaezoo.data import load_data, write_idx

NAMES = "names and config"
DATA = "data"
WEIGHTS = "weights and model folders"
PLUGINS = "plugins"
DATA_BOMBS = "data bombs"
PLUGIN_METADATA = "plugin metadata"
PYTHON_API = "python api"
SIZES = "sizes"
COMMANDS = "commands"


@dataclass(frozen=True)
class Case:
    """One bad input: a CLI command (and maybe a Python call) and the one-line error it must end in."""

    category: str
    name: str
    argv: tuple[str, ...]  # vaezoo's arguments; "{tmp}" becomes the case's folder
    expect: str  # a fragment of the one-line error; "" when the command must succeed
    setup: Callable[[Path], None] | None = None  # writes the bad files into the case's folder
    python: Callable[[Path], Any] | None = None  # the same input through the Python API: must raise expect
    plugins: bool = False  # {tmp}/site goes on the import path and the registry is rescanned
    exit_code: int | None = None  # default: 1 for an error, 0 for success

    @property
    def expected_exit(self) -> int:
        return self.exit_code if self.exit_code is not None else (1 if self.expect else 0)

    def args(self, tmp: Path) -> list[str]:
        return [arg.replace("{tmp}", str(tmp)) for arg in self.argv]


# --- names and config ------------------------------------------------------------------------------
def cli_train(*extra: str, name: str = "vae-mlp", data: str = "digits") -> tuple[str, ...]:
    return ("train", name, "--data", data, "--epochs", "1", "--quiet", "--out", "{tmp}/run", *extra)


def build(name: str, **overrides: Any) -> Callable[[Path], Any]:
    return lambda tmp: vaezoo.create_model(name, **overrides)


NAME_CASES = [
    Case(NAMES, "seed past 2**63", cli_train("--seed", str(2**64)), "seed=18446744073709551616 must be an integer in 0..",
         python=lambda tmp: vaezoo.TrainConfig(seed=2**64)),
    Case(NAMES, "split seed past 2**63", cli_train("--split-seed", str(2**64)), "split seed=18446744073709551616 must be"),
    Case(NAMES, "sample seed past 2**63", ("sample", "vae-mlp.digits", "--seed", str(2**64), "-o", "{tmp}/s.png"),
         "seed=18446744073709551616 must be an integer in 0.."),
    Case(NAMES, "bench seed past 2**63", ("bench", "vae-mlp", "--data", "digits", "--epochs", "1", "--seed", str(2**64),
                                          "--out", "{tmp}/b"), "seed=18446744073709551616 must be an integer in 0.."),
    Case(NAMES, "--out names a file", ("train", "vae-mlp", "--data", "digits", "--epochs", "1", "--quiet", "--out",
                                       "{tmp}/a-file"), "a-file is a file, not a folder; choose another --out",
         setup=lambda tmp: (tmp / "a-file").write_text("x")),
    Case(NAMES, "unknown model", ("info", "vq-vea"), "unknown model 'vq-vea' (did you mean 'vq-vae'",
         python=build("vq-vea")),
    Case(NAMES, "unknown model to train", cli_train(name="vae-mpl"), "did you mean 'vae-mlp'"),
    Case(NAMES, "unknown tag", ("eval", "vae-mlp.fmnst", "--data", "digits"), "unknown pretrained tag 'vae-mlp.fmnst'",
         python=lambda tmp: vaezoo.from_pretrained("vae-mlp.fmnst")),
    Case(NAMES, "unknown tag of info", ("info", "hvae.imagenet"), "unknown pretrained tag 'hvae.imagenet'"),
    Case(NAMES, "unknown config field", cli_train("--set", "latent_dims=3"), "field 'latent_dims'",
         python=build("vae-mlp", latent_dims=3)),
    Case(NAMES, "unknown training field", cli_train("--set", "epoch=3"), "did you mean 'epochs'"),
    Case(NAMES, "unknown bench field", ("bench", "vae-mlp", "--quick", "--set", "nonsense=1", "--out", "{tmp}/b"),
         "unknown field 'nonsense'"),
    Case(NAMES, "unknown preset", (), "unknown preset 'tiyn' for 'vae-mlp' (did you mean 'tiny'?)",
         python=lambda tmp: vaezoo.create_model("vae-mlp", preset="tiyn")),
    Case(NAMES, "malformed --set", cli_train("--set", "latent_dim"), "is not of the form key=value"),
    Case(NAMES, "wrong type: int", cli_train("--set", "latent_dim=ten"), "latent_dim='ten' has the wrong type",
         python=build("vae-mlp", latent_dim="ten")),
    Case(NAMES, "wrong type: list of int", cli_train("--set", "hidden_dims=[\"a\"]"), "has the wrong type"),
    Case(NAMES, "wrong type: bool", cli_train("--set", "dynamic_binarization=maybe"), "expected true or false"),
    Case(NAMES, "wrong type: option", cli_train("--lr", "fast"), "Invalid value for '--lr'", exit_code=2),
    Case(NAMES, "negative latent_dim", cli_train("--set", "latent_dim=-1"), "latent_dim=-1 must be a positive integer",
         python=build("vae-mlp", latent_dim=-1)),
    Case(NAMES, "zero latent_dim", cli_train("--set", "latent_dim=0"), "latent_dim=0 must be a positive integer"),
    Case(NAMES, "beta < 0", cli_train("--set", "beta=-2", name="beta-vae"), "beta=-2.0 must be >= 0",
         python=build("beta-vae", beta=-2.0)),
    Case(NAMES, "beta = Inf", cli_train("--set", "beta=Infinity", name="beta-vae"), "beta=inf must be a finite number",
         python=build("beta-vae", beta=math.inf)),
    Case(NAMES, "beta = NaN", cli_train("--set", "beta=NaN"), "beta=nan must be a finite number",
         python=build("vae-mlp", beta=math.nan)),
    Case(NAMES, "codebook size 0", cli_train("--set", "codebook_size=0", name="vq-vae"), "codebook_size=0 must be a positive",
         python=build("vq-vae", codebook_size=0)),
    Case(NAMES, "codebook size 1", cli_train("--set", "codebook_size=1", name="vq-vae"), "codebook_size=1 must be >= 2"),
    Case(NAMES, "empty latent_dims", cli_train("--set", "latent_dims=[]", name="hvae"), "latent_dims=() must be a non-empty"),
    Case(NAMES, "a field the variant does not read", cli_train("--set", "hidden_dims=[7]", name="vdvae"),
         "hidden_dims=(7,) has no effect on VDVAEConfig", python=build("vdvae", hidden_dims=(7,))),
    Case(NAMES, "vq-vae's unused latent_dim", cli_train("--set", "latent_dim=64", name="vq-vae"),
         "latent_dim=64 has no effect on VQVAEConfig", python=build("vq-vae", latent_dim=64)),
    Case(NAMES, "a derived field set apart", cli_train("--set", "latent_dim=16", name="autoencoder-kl"),
         "it is derived from latent_channels (4); set latent_channels=16", python=build("autoencoder-kl", latent_dim=16)),
    Case(NAMES, "free_bits < 0", cli_train("--set", "free_bits=-1", name="hvae"), "free_bits=-1.0 must be >= 0"),
    Case(NAMES, "ema_decay out of (0, 1)", cli_train("--set", "ema_decay=1.5", name="vq-vae"), "ema_decay=1.5 must be in (0, 1)"),
    Case(NAMES, "heads do not divide width", cli_train("--set", "prior_heads=3", name="vq-vae"), "prior_heads=3 must divide"),
    Case(NAMES, "negative num_classes", cli_train("--set", "num_classes=-1", name="cvae"), "num_classes=-1"),
    Case(NAMES, "2-d input_shape", cli_train("--set", "input_shape=[8,8]"), "input_shape=(8, 8) has 2 dims"),
    Case(NAMES, "gaussian_scale 0", cli_train("--set", "likelihood=gaussian", "--set", "gaussian_scale=0"),
         "gaussian_scale=0.0 must be > 0"),
    Case(NAMES, "misspelt likelihood", cli_train("--set", "likelihood=gausian"), "did you mean 'gaussian'"),
    Case(NAMES, "unknown timm encoder", cli_train("--set", "encoder=timm:resnet-18"), "timm has no model 'resnet-18'"),
    Case(NAMES, "too large to allocate", cli_train("--set", "latent_dim=1e12"), "needs more memory than there is",
         python=build("vae-mlp", latent_dim=10**12)),
    Case(NAMES, "batch size 0", cli_train("--batch-size", "0"), "batch_size=0 must be a positive integer"),
    Case(NAMES, "epochs 0", cli_train("--epochs", "0"), "epochs=0 must be a positive integer"),
    Case(NAMES, "negative lr", cli_train("--lr", "-1"), "lr=-1.0 must be a positive number"),
    Case(NAMES, "infinite weight decay", cli_train("--set", "weight_decay=Infinity"), "weight_decay=inf must be a finite"),
    Case(NAMES, "min_lr_ratio > 1", cli_train("--set", "min_lr_ratio=2"), "min_lr_ratio=2.0 must be in [0, 1]"),
    Case(NAMES, "stages miscounted", ("train", "vq-vae", "--data", "digits", "--quiet", "--out", "{tmp}/run", "--set",
                                      "stage_epochs=[1]"), "names 1 stages but VQVAE trains in 2"),
    Case(NAMES, "stages of zero epochs", ("train", "vq-vae", "--data", "digits", "--quiet", "--out", "{tmp}/run", "--set",
                                         "stage_epochs=[0,0]"), "stage_epochs=[0, 0] must hold positive integers"),
    Case(NAMES, "epochs and stage epochs both", cli_train("--set", "stage_epochs=[3,2]", name="vq-vae"),
         "both epochs=1 and stage_epochs=[3, 2] given in training options: give one"),
    Case(NAMES, "negative iw samples", ("eval", "vae-mlp.digits", "--data", "digits", "--iw-samples", "-3"),
         "Invalid value for '--iw-samples'", exit_code=2),
    Case(NAMES, "bench epochs 0", ("bench", "vae-mlp", "--data", "digits", "--epochs", "0", "--out", "{tmp}/b"),
         "epochs=0 must be a positive integer"),
    Case(NAMES, "invalid plugin name", ("new-plugin", "Bad_Name", "--dir", "{tmp}/p"), "plugin name 'Bad_Name' is not valid"),
    Case(NAMES, "plugin name taken", ("new-plugin", "vae-mlp", "--dir", "{tmp}/p"), "already registered by distribution"),
    Case(NAMES, "plugin dir not empty", ("new-plugin", "fresh-vae", "--dir", "{tmp}"), "is not empty",
         setup=lambda tmp: (tmp / "keep.txt").write_text("mine")),
]


# --- data ------------------------------------------------------------------------------------------
def save_npy(file: str, array: np.ndarray) -> Callable[[Path], None]:
    return lambda tmp: np.save(tmp / file, array, allow_pickle=array.dtype == object)


def save_npz(file: str, **arrays: np.ndarray) -> Callable[[Path], None]:
    return lambda tmp: np.savez(tmp / file, **arrays)


def write_bytes(file: str, data: bytes) -> Callable[[Path], None]:
    return lambda tmp: (tmp / file).write_bytes(data)


def truncated_npy(tmp: Path) -> None:
    np.save(tmp / "cut.npy", np.random.default_rng(0).random((50, 4)))
    data = (tmp / "cut.npy").read_bytes()
    (tmp / "cut.npy").write_bytes(data[: len(data) // 2])


def mnist_folder(tmp: Path, n_train: int = 40, n_test: int = 20, bad_label: int | None = None) -> Path:
    folder = tmp / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for part, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{part}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        labels = (np.arange(n) % 10).astype(np.uint8)
        if bad_label is not None:
            labels[3] = bad_label
        write_idx(folder / f"{part}-labels-idx1-ubyte.gz", labels)
    return folder


def truncated_idx(tmp: Path) -> None:
    path = mnist_folder(tmp) / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) - 100]))


def images(n: int, *shape: int, value: float = 0.5) -> np.ndarray:
    return np.full((n, *shape), value, dtype=np.float32)


def with_value(array: np.ndarray, value: float) -> np.ndarray:
    array = array.copy()
    array.flat[7] = value
    return array


def load(file: str, **kwargs: Any) -> Callable[[Path], Any]:
    return lambda tmp: load_data(str(tmp / file), **kwargs)


def train_on(file: str, name: str = "vae-mlp", *extra: str) -> tuple[str, ...]:
    return cli_train(*extra, name=name, data="{tmp}/" + file)


DATA_CASES = [
    Case(DATA, "a --data-dir that does not exist", cli_train("--data-dir", "{tmp}/nowhere", data="fashion-mnist"),
         "nowhere does not exist or is not a folder; pass the folder that holds the files",
         python=lambda tmp: load_data("fashion-mnist", data_dir=tmp / "nowhere")),
    Case(DATA, "missing file", train_on("nope.npy"), "does not exist", python=load("nope.npy")),
    Case(DATA, "unknown dataset", cli_train(data="digitz"), "unknown dataset 'digitz' (did you mean 'digits'?)",
         python=lambda tmp: load_data("digitz")),
    Case(DATA, "missing mnist files", ("train", "vae-mlp", "--data", "mnist", "--data-dir", "{tmp}", "--out", "{tmp}/run"),
         "mnist not found"),
    Case(DATA, "zero rows", train_on("empty.npy"), "holds zero rows", setup=save_npy("empty.npy", np.zeros((0, 4))),
         python=load("empty.npy")),
    Case(DATA, "empty file", train_on("blank.npy"), "cannot read", setup=write_bytes("blank.npy", b"")),
    Case(DATA, "empty table", train_on("blank.csv"), "is empty", setup=write_bytes("blank.csv", b"")),
    Case(DATA, "header-only table", train_on("header.csv"), "zero data rows", setup=write_bytes("header.csv", b"a,b\n")),
    Case(DATA, "empty image folder", train_on("pics"), "holds no images", setup=lambda tmp: (tmp / "pics" / "cats").mkdir(parents=True)),
    Case(DATA, "truncated npy", train_on("cut.npy"), "cannot read", setup=truncated_npy, python=load("cut.npy")),
    Case(DATA, "corrupt npz", train_on("bad.npz"), "cannot read", setup=write_bytes("bad.npz", b"PK\x03\x04 not a zip")),
    Case(DATA, "truncated IDX", ("train", "vae-mlp", "--data", "mnist", "--data-dir", "{tmp}", "--out", "{tmp}/run"),
         "truncated", setup=truncated_idx),
    Case(DATA, "unreadable image", train_on("pics"), "cannot read image",
         setup=lambda tmp: ((tmp / "pics").mkdir(), (tmp / "pics" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage"))),
    Case(DATA, "1-d array", train_on("flat.npy"), "1-d", setup=save_npy("flat.npy", np.zeros(10))),
    Case(DATA, "5-d array", train_on("deep.npy"), "5-d", setup=save_npy("deep.npy", np.zeros((2, 3, 4, 5, 6)))),
    Case(DATA, "images of mixed sizes", train_on("pics"), "different sizes", setup=lambda tmp: mixed_images(tmp / "pics")),
    Case(DATA, "text values", train_on("text.npy"), "real numbers", setup=save_npy("text.npy", np.array([["a", "b"]] * 5))),
    Case(DATA, "complex values", train_on("cplx.npy"), "complex64", setup=save_npy("cplx.npy", np.zeros((10, 3), np.complex64))),
    Case(DATA, "pickled objects", train_on("obj.npy"), "cannot read", setup=save_npy("obj.npy", np.array([{"a": 1}] * 3))),
    Case(DATA, "non-numeric column", train_on("t.csv"), "column 'color'", setup=write_bytes("t.csv", b"a,color\n1,red\n2,blue\n")),
    Case(DATA, "NaN values", train_on("nan.npy"), "1 NaN and 0 Inf", setup=save_npy("nan.npy", with_value(images(20, 1, 8, 8), np.nan)),
         python=load("nan.npy")),
    Case(DATA, "Inf values", train_on("inf.npy"), "0 NaN and 1 Inf", setup=save_npy("inf.npy", with_value(images(20, 1, 8, 8), np.inf))),
    Case(DATA, "NaN cell in a table", train_on("n.csv"), "line 3, column 'b'", setup=write_bytes("n.csv", b"a,b\n1,2\n3,\n4,5\n")),
    Case(DATA, "negative label", train_on("neg.npz"), "non-negative integers",
         setup=save_npz("neg.npz", x=images(10, 4), y=np.array([0, 1, -1, 2, 0, 1, 2, 0, 1, 2]))),
    Case(DATA, "fractional label", train_on("frac.npz"), "non-negative integers",
         setup=save_npz("frac.npz", x=images(10, 4), y=np.array([0, 1.5] * 5))),
    Case(DATA, "labels outside the model's classes (train)", cli_train("--set", "num_classes=5", name="cvae"),
         "has labels 0..9 but the model has num_classes=5"),
    Case(DATA, "labels outside the model's classes (eval)", ("eval", "cvae.digits", "--data", "{tmp}/twelve.npz"),
         "but the model knows 0..9; evaluate it on data with the classes it was trained on",
         setup=save_npz("twelve.npz", x=images(120, 1, 8, 8), y=np.arange(120) % 12)),
    Case(DATA, "IDX label outside the classes", ("train", "vae-mlp", "--data", "mnist", "--data-dir", "{tmp}", "--out", "{tmp}/run"),
         "holds label 12", setup=lambda tmp: mnist_folder(tmp, bad_label=12)),
    Case(DATA, "examples of the wrong shape for the model", ("eval", "vae-mlp.digits", "--data", "{tmp}/v.npy"),
         "has examples of shape (10,) but the model takes (1, 8, 8)", setup=save_npy("v.npy", images(30, 10))),
    Case(DATA, "input_shape set against the data", cli_train("--set", "input_shape=[1,28,28]"),
         "the data has examples of shape (1, 8, 8)"),
    Case(DATA, "unlabelled data for a conditional model", train_on("x.npy", "cvae"), "has no labels; give it labelled data",
         setup=save_npy("x.npy", images(20, 1, 8, 8))),
    Case(DATA, "NaN tensor given to a model", (), "x holds NaN or Inf values",
         python=lambda tmp: model_on(torch.full((2, 1, 8, 8), math.nan))),
    Case(DATA, "int tensor given to a model", (), "x has dtype torch.uint8",
         python=lambda tmp: model_on(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))),
    Case(DATA, "values outside [0, 1] for a Bernoulli model", (), "the Bernoulli likelihood needs [0, 1]",
         python=lambda tmp: model_on(torch.full((2, 1, 8, 8), 3.0))),
    Case(DATA, "NaN in hand-made training splits", (), "the train split holds NaN or Inf values",
         python=lambda tmp: train_on_splits(math.nan)),
    Case(DATA, "well-formed data trains", train_on("ok.npz", "vae-mlp"), "",
         setup=save_npz("ok.npz", x=np.random.default_rng(0).random((40, 6)), y=np.arange(40) % 3)),
]


def mixed_images(folder: Path) -> None:
    from PIL import Image

    for size, name in (((6, 5), "a.png"), ((8, 8), "b.png")):
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("L", size, 128).save(folder / name)


def model_on(x: torch.Tensor) -> Any:
    model = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(1, 8, 8)).eval()
    return model.reconstruct(x)


def train_on_splits(value: float) -> Any:
    from vaezoo.data import DataSplits, TensorData

    x = torch.rand(40, 1, 8, 8)
    x[5, 0, 0, 0] = value
    part = TensorData(x)
    splits = DataSplits(part, part[:8], part[:8], "hand-made", (1, 8, 8), 0, None, "test")
    return vaezoo.train(vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(1, 8, 8)), splits, epochs=1, progress=False)


# --- weights and model folders ----------------------------------------------------------------------
def model_dir(tmp: Path, name: str = "vae-mlp") -> Path:
    torch.manual_seed(0)
    model = vaezoo.create_model(name, preset="tiny", input_shape=(1, 8, 8))
    model.save_pretrained(tmp / "model")
    return tmp / "model"


def corrupt(change: Callable[[Path], None]) -> Callable[[Path], None]:
    return lambda tmp: change(model_dir(tmp))


def cut_weights(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def flip_bytes(offset_from_end: int) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        data = bytearray((folder / "model.safetensors").read_bytes())
        position = len(data) - offset_from_end if offset_from_end else 8  # 8: the JSON header's opening brace
        data[position] ^= 0x5A
        (folder / "model.safetensors").write_bytes(bytes(data))
    return change


def rewrite_weights(edit: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        from vaezoo.io.tensors import load_tensors, save_tensors

        tensors = load_tensors(folder / "model.safetensors")
        edit(tensors)
        save_tensors(folder / "model.safetensors", tensors)
    return change


def other_variant(folder: Path) -> None:
    other = model_dir(folder.parent / "other", "beta-vae")
    (folder / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())


def write_config(config: dict[str, Any] | str) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        (folder / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    return change


def patch_config(**fields: Any) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        data = json.loads((folder / "config.json").read_text())
        data["config"].update(fields)
        (folder / "config.json").write_text(json.dumps(data))
    return change


def only_pickle(folder: Path) -> None:
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": [1, 2, 3]}))


def unfinished_run(tmp: Path) -> None:
    folder = model_dir(tmp)
    (folder / "checkpoints").mkdir()
    (folder / "model.safetensors").rename(folder / "checkpoints" / "last.safetensors")


def evaluate_dir(folder: str = "model") -> tuple[str, ...]:
    return ("eval", "{tmp}/" + folder, "--data", "digits", "--iw-samples", "0")


def load_dir(tmp: Path, folder: str = "model") -> Any:
    return vaezoo.from_pretrained(str(tmp / folder))


def resume_model_dir() -> tuple[str, ...]:
    return ("train", "vae-mlp", "--resume", "--data", "digits", "--quiet", "--out", "{tmp}/model")


def cut_weights_at(folder: Path) -> None:
    data = (folder / "last.safetensors").read_bytes()
    (folder / "last.safetensors").write_bytes(data[: len(data) // 3])


WEIGHT_CASES = [
    Case(WEIGHTS, "intact model folder", evaluate_dir(), "", setup=model_dir),
    Case(WEIGHTS, "truncated weights", evaluate_dir(), "truncated or corrupted", setup=corrupt(cut_weights), python=load_dir),
    Case(WEIGHTS, "corrupted header", evaluate_dir(), "not a readable safetensors file", setup=corrupt(flip_bytes(0)),
         python=load_dir),
    Case(WEIGHTS, "corrupted tensor bytes", evaluate_dir(), "do not match the SHA-256 stored in it",
         setup=corrupt(flip_bytes(9)), python=load_dir),
    Case(WEIGHTS, "weights of another variant", evaluate_dir(), "do not fit VanillaVAE", setup=corrupt(other_variant),
         python=load_dir),
    Case(WEIGHTS, "missing key", evaluate_dir(), "missing keys posterior_head.linear.bias",
         setup=corrupt(rewrite_weights(lambda t: t.pop("posterior_head.linear.bias"))), python=load_dir),
    Case(WEIGHTS, "extra key", evaluate_dir(), "unexpected keys extra.weight",
         setup=corrupt(rewrite_weights(lambda t: t.update({"extra.weight": torch.zeros(2)}))), python=load_dir),
    Case(WEIGHTS, "mis-shaped tensor", evaluate_dir(), "shape mismatches",
         setup=corrupt(rewrite_weights(lambda t: t.update({"decoder.net.1.weight": torch.zeros(3, 3)})))),
    Case(WEIGHTS, "NaN weights", evaluate_dir(), "hold NaN or Inf values",
         setup=corrupt(rewrite_weights(lambda t: t["decoder.net.1.weight"].fill_(math.nan))), python=load_dir),
    Case(WEIGHTS, "pickle renamed to .safetensors", evaluate_dir(), "not a readable safetensors file",
         setup=corrupt(lambda folder: (folder / "model.safetensors").write_bytes(pickle.dumps({"w": 1}))),
         python=load_dir),
    Case(WEIGHTS, "only a pickle file", evaluate_dir(), "vaezoo loads safetensors only", setup=corrupt(only_pickle),
         python=load_dir),
    Case(WEIGHTS, "a pickle file given directly", ("eval", "{tmp}/model.pt", "--data", "digits"),
         "pickle-format file", setup=write_bytes("model.pt", pickle.dumps({"w": 1})),
         python=lambda tmp: vaezoo.from_pretrained(str(tmp / "model.pt"))),
    Case(WEIGHTS, "config.json not JSON", evaluate_dir(), "is not valid JSON", setup=corrupt(write_config("{not json")),
         python=load_dir),
    Case(WEIGHTS, "config.json of another program", evaluate_dir(), "lacks 'architecture' and 'config'",
         setup=corrupt(write_config({"model_type": "bert"}))),
    Case(WEIGHTS, "variant not installed", evaluate_dir(), "names a variant that is not installed: unknown model 'flow-vae'",
         setup=corrupt(write_config({"architecture": "flow-vae", "config": {}})), python=load_dir),
    Case(WEIGHTS, "unknown config field", evaluate_dir(), "unknown config field 'latent_size'",
         setup=corrupt(patch_config(latent_size=4)), python=load_dir),
    Case(WEIGHTS, "bad config value", evaluate_dir(), "latent_dim=-4 must be a positive integer",
         setup=corrupt(patch_config(latent_dim=-4)), python=load_dir),
    Case(WEIGHTS, "no config.json", evaluate_dir(), "has no config.json",
         setup=corrupt(lambda folder: (folder / "config.json").unlink()), python=load_dir),
    Case(WEIGHTS, "missing folder", evaluate_dir("gone"), "is not a model directory",
         python=lambda tmp: load_dir(tmp, "gone")),
    Case(WEIGHTS, "run that has not finished", evaluate_dir(), "its training has not finished", setup=unfinished_run,
         python=load_dir),
    Case(WEIGHTS, "resume from a truncated checkpoint", resume_model_dir(), "truncated or corrupted",
         setup=lambda tmp: (unfinished_run(tmp), cut_weights_at(tmp / "model/checkpoints"))),
    Case(WEIGHTS, "resume from weights that are not a checkpoint", resume_model_dir(), "has no readable training state",
         setup=unfinished_run),
]


# --- plugins --------------------------------------------------------------------------------------
PLUGIN_SOURCES = {
    "robust_broken": "raise ImportError('needs libfoo')\n",
    "robust_exits": "import sys\nsys.exit('plugin gave up')\n",
    "robust_not_a_vae": "class NotAVAE:\n    pass\n",
    "robust_bad_config": textwrap.dedent("""
        from vaezoo_plugins.vae_mlp import VanillaVAE
        class BadConfigVAE(VanillaVAE):
            config_class = dict
    """),
    "robust_no_forward": textwrap.dedent("""
        import vaezoo
        class HalfVAE(vaezoo.VAE):
            config_class = vaezoo.VAEConfig
            def encode(self, x, y=None):
                return None
    """),
    "robust_ctor": textwrap.dedent("""
        from vaezoo_plugins.vae_mlp import VanillaVAE
        class CrashingVAE(VanillaVAE):
            def __init__(self, config):
                super().__init__(config)
                1 / 0
    """),
}
PLUGIN_ENTRY_POINTS = {
    "broken-vae": ("broken-plugin", "robust_broken:BrokenVAE"),
    "exiting-vae": ("exiting-plugin", "robust_exits:ExitingVAE"),
    "not-a-vae": ("not-a-vae-plugin", "robust_not_a_vae:NotAVAE"),
    "bad-config-vae": ("bad-config-plugin", "robust_bad_config:BadConfigVAE"),
    "half-vae": ("half-plugin", "robust_no_forward:HalfVAE"),
    "crashing-vae": ("crashing-plugin", "robust_ctor:CrashingVAE"),
    "missing-class-vae": ("missing-class-plugin", "robust_not_a_vae:NoSuchClass"),
    "vae-mlp": ("impostor-plugin", "robust_not_a_vae:NotAVAE"),  # claims a built-in's name
    "dotted.vae": ("dotted-plugin", "robust_not_a_vae:NotAVAE"),
}


def plugin_site(tmp: Path) -> Path:
    """A site folder holding the plugin modules above and one installed distribution per entry point."""
    site = tmp / "site"
    site.mkdir(parents=True, exist_ok=True)
    for module, source in PLUGIN_SOURCES.items():
        (site / f"{module}.py").write_text(source)
    for name, (distribution, target) in PLUGIN_ENTRY_POINTS.items():
        info = site / f"{distribution.replace('-', '_')}-0.1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1.0\n")
        (info / "entry_points.txt").write_text(f"[vaezoo.models]\n{name} = {target}\n")
    return site


def plugin_case(name: str, argv: tuple[str, ...], expect: str, python: Callable[[Path], Any] | None = None) -> Case:
    return Case(PLUGINS, name, argv, expect, setup=plugin_site, python=python, plugins=True)


PLUGIN_CASES = [
    plugin_case("listing with broken plugins installed", ("list",), ""),
    plugin_case("listing tags with broken plugins installed", ("list", "--pretrained"), ""),
    plugin_case("import raises", cli_train(name="broken-vae"), "failed to import: ImportError: needs libfoo",
                python=build("broken-vae")),
    plugin_case("import calls sys.exit", cli_train(name="exiting-vae"), "failed to import: SystemExit: plugin gave up"),
    plugin_case("entry point names a missing class", ("info", "missing-class-vae"), "failed to import: AttributeError"),
    plugin_case("not a VAE subclass", cli_train(name="not-a-vae"), "not a subclass of vaezoo.VAE", python=build("not-a-vae")),
    plugin_case("config_class not a VAEConfig", ("info", "bad-config-vae"), "must be a dataclass deriving from vaezoo.VAEConfig"),
    plugin_case("contract methods missing", ("info", "half-vae"), "does not implement decode, forward",
                python=build("half-vae")),
    plugin_case("constructor raises", cli_train(name="crashing-vae"), "failed: ZeroDivisionError: division by zero",
                python=build("crashing-vae")),
    plugin_case("claims a built-in's name", cli_train(name="vae-mlp"), "claimed by two distributions",
                python=build("vae-mlp")),
    plugin_case("name with a dot is skipped", ("info", "dotted"), "unknown model 'dotted'"),
    plugin_case("other variants still work", cli_train(name="cvae"), ""),
]


# --- data bombs: files that would hang or exhaust memory, refused by size and type before reading -----
def special_file(file: str, kind: str) -> Callable[[Path], None]:
    """Writes ``file`` as a FIFO, a link to /dev/zero, a Unix socket, a link loop or a dangling link."""
    import socket

    def make(tmp: Path) -> None:
        path = tmp / file
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.parent != tmp:
            save_png_at(tmp / "pics" / "ok.png")
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "socket":
            socket.socket(socket.AF_UNIX).bind(str(path))
        else:
            path.symlink_to({"zero": "/dev/zero", "loop": path, "dangling": tmp / "moved.npy"}[kind])
    return make


def save_png_at(path: Path, size: tuple[int, int] = (8, 8)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, 128).save(path)


def png_bomb(width: int, height: int) -> Callable[[Path], None]:
    """A folder with one normal image and a ~70-byte PNG whose header claims width x height pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    def make(tmp: Path) -> None:
        save_png_at(tmp / "pics" / "a.png")
        header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
        (tmp / "pics" / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                                                + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b""))
    return make


def npy_claiming(file: str, shape: tuple[int, ...], sparse_bytes: int = 0) -> Callable[[Path], None]:
    """A float32 .npy (or an .npz holding it as x) whose header claims ``shape``: 48 bytes follow, or a sparse hole."""
    import zipfile

    def make(tmp: Path) -> None:
        member = tmp / "member.npy"
        with member.open("wb") as handle:
            np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False, "shape": shape})
            handle.write(bytes(0 if sparse_bytes else 48))
        if sparse_bytes:
            os.truncate(member, member.stat().st_size + sparse_bytes)  # holes: no disk used
        if file.endswith(".npz"):
            with zipfile.ZipFile(tmp / file, "w") as archive:
                archive.write(member, "x.npy")
        else:
            member.rename(tmp / file)
    return make


def idx_bomb(header_shape: tuple[int, ...], payload: bytes, gz: bool = True) -> Callable[[Path], None]:
    """An MNIST folder whose train images file has a header of ``header_shape`` followed by ``payload``."""
    import struct

    def make(tmp: Path) -> None:
        folder = mnist_folder(tmp)
        (folder / "train-images-idx3-ubyte.gz").unlink()
        raw = bytes([0, 0, 8, len(header_shape)]) + struct.pack(f">{len(header_shape)}I", *header_shape)
        if gz:  # gzip members concatenate: 64 of 16 MiB zeros are 1 GiB decoded from about 1 MB
            (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw + payload) + gzip.compress(bytes(2**24)) * 64)
        else:
            (folder / "train-images-idx3-ubyte").write_bytes(raw + payload)
    return make


def labels_file(file: str, label: float | int, dtype: Any = np.int64) -> Callable[[Path], None]:
    """An .npz of 8x8 images whose fifth label is ``label``."""
    y = (np.arange(40) % 3).astype(dtype)
    y[4] = label
    return save_npz(file, x=images(40, 1, 8, 8), y=y)


def mnist_data(*extra: str) -> tuple[str, ...]:
    return ("train", "vae-mlp", "--data", "mnist", "--data-dir", "{tmp}/mnist", "--epochs", "1", "--quiet", "--out",
            "{tmp}/run", *extra)


DATA_BOMB_CASES: list[Case] = [
    Case(DATA_BOMBS, "a FIFO as --data", train_on("pipe.npy"), "pipe.npy is a named pipe (FIFO)",
         setup=special_file("pipe.npy", "fifo"), python=load("pipe.npy")),
    Case(DATA_BOMBS, "a FIFO named like a table", train_on("pipe.csv"), "pipe.csv is a named pipe (FIFO)",
         setup=special_file("pipe.csv", "fifo")),
    Case(DATA_BOMBS, "/dev/zero as --data", cli_train(data="/dev/zero"), "data file /dev/zero is a character device",
         python=lambda tmp: load_data("/dev/zero")),
    Case(DATA_BOMBS, "a link to /dev/zero named x.csv", train_on("zeros.csv"), "zeros.csv is a character device",
         setup=special_file("zeros.csv", "zero"), python=load("zeros.csv")),
    Case(DATA_BOMBS, "a socket as --data", train_on("sock.npz"), "sock.npz is a socket",
         setup=special_file("sock.npz", "socket")),
    Case(DATA_BOMBS, "a FIFO inside an image folder", train_on("pics"), "pics/pipe.png is a named pipe (FIFO)",
         setup=special_file("pics/pipe.png", "fifo"), python=load("pics")),
    Case(DATA_BOMBS, "/dev/zero inside an image folder", train_on("pics"), "pics/zero.png is a character device",
         setup=special_file("pics/zero.png", "zero")),
    Case(DATA_BOMBS, "a FIFO as an IDX file", mnist_data(), "train-images-idx3-ubyte.gz is a named pipe",
         setup=lambda tmp: (mnist_folder(tmp), (tmp / "mnist" / "train-images-idx3-ubyte.gz").unlink(),
                            special_file("mnist/train-images-idx3-ubyte.gz", "fifo")(tmp))),
    Case(DATA_BOMBS, "a symlink loop", train_on("loop.npy"), "loop.npy is a symbolic link loop",
         setup=special_file("loop.npy", "loop"), python=load("loop.npy")),
    Case(DATA_BOMBS, "a dangling symlink", train_on("gone.npy"), "moved.npy that does not exist",
         setup=special_file("gone.npy", "dangling")),
    Case(DATA_BOMBS, "PNG claiming 15000x15000", train_on("pics"), "bomb.png has 225000000 pixels, too large to decode",
         setup=png_bomb(15000, 15000), python=load("pics")),
    Case(DATA_BOMBS, "PNG claiming 9000x9000 (under Pillow's limit)", train_on("pics"),
         "bomb.png has 9000x9000 pixels, too large to decode", setup=png_bomb(9000, 9000)),
    Case(DATA_BOMBS, "an empty PNG", train_on("pics"), "empty.png: it is empty (0 bytes)",
         setup=lambda tmp: (save_png_at(tmp / "pics" / "a.png"), (tmp / "pics" / "empty.png").write_bytes(b""))),
    Case(DATA_BOMBS, ".npy header claiming 10**12 rows", train_on("huge.npy"),
         "header says shape (1000000000000, 3) of float32, which needs 12000000000128 bytes, but it holds 176",
         setup=npy_claiming("huge.npy", (10**12, 3)), python=load("huge.npy")),
    Case(DATA_BOMBS, ".npz member claiming 10**12 rows", train_on("huge.npz"), "(key 'x'): its header says shape (1000000000000, 3)",
         setup=npy_claiming("huge.npz", (10**12, 3)), python=load("huge.npz")),
    Case(DATA_BOMBS, "sparse 4 TB .npy matching its header", train_on("sparse.npy"), "more than this machine's",
         setup=npy_claiming("sparse.npy", (10**9, 1000), sparse_bytes=4 * 10**12), python=load("sparse.npy")),
    Case(DATA_BOMBS, "IDX dims whose product overflows int64", mnist_data(),
         "is truncated: its header (4294967295, 4294967295, 4294967295, 4294967295) needs",
         setup=idx_bomb((2**32 - 1,) * 4, bytes(100), gz=False)),
    Case(DATA_BOMBS, "gzip IDX header claiming 2**44 bytes", mnist_data(), "GiB of memory to load, more than this machine's",
         setup=idx_bomb((2**20, 2**12, 2**12), bytes(100))),
    Case(DATA_BOMBS, "gzip IDX bomb: 1 GiB of zeros after the values", mnist_data(),
         "has trailing bytes: its header (40, 28, 28) needs 31376 bytes", setup=idx_bomb((40, 28, 28), bytes(40 * 28 * 28))),
    Case(DATA_BOMBS, "a CSV line of 2 MB", train_on("wide.csv"), "line 3 is longer than 1048576 characters",
         setup=write_bytes("wide.csv", b"a,b\n1,2\n" + b"3," * 2**20 + b"\n"), python=load("wide.csv")),
    Case(DATA_BOMBS, "label 2**62 for cvae", train_on("big.npz", "cvae"),
         "must be class ids below 65536 but sample 4 has 4611686018427387904", setup=labels_file("big.npz", 2**62),
         python=load("big.npz")),
    Case(DATA_BOMBS, "label 2**62 for vae-mlp", train_on("big.npz"), "sample 4 has 4611686018427387904",
         setup=labels_file("big.npz", 2**62)),
    Case(DATA_BOMBS, "label 2**64-1 (uint64) for eval", ("eval", "cvae.digits", "--data", "{tmp}/u.npz"),
         "sample 4 has 18446744073709551615", setup=labels_file("u.npz", 2**64 - 1, np.uint64)),
    Case(DATA_BOMBS, "label 1.5 for cvae", train_on("half.npz", "cvae"), "non-negative integers but sample 4 has 1.5",
         setup=labels_file("half.npz", 1.5, np.float64)),
    Case(DATA_BOMBS, "label 1e300 in a table", train_on("t.csv", "cvae"), "sample 1 has 1e+300",
         setup=write_bytes("t.csv", b"a,b,label\n1,2,0\n3,4,1e300\n" + b"5,6,1\n" * 20)),
    Case(DATA_BOMBS, "num_classes=2**62", cli_train("--set", f"num_classes={2**62}", name="cvae"),
         "num_classes=4611686018427387904 must be in 0..65536", python=build("cvae", num_classes=2**62)),
]

# --- plugin metadata: broken tags, cards and configs; a broken plugin is reported once and skipped ---
METADATA_PLUGIN_SOURCES = {
    "robust_meta_tags": textwrap.dedent("""
        from dataclasses import dataclass
        import vaezoo
        from vaezoo_plugins.vae_mlp import VanillaVAE, VanillaVAEConfig
        DIGITS = vaezoo.PretrainedTag({"input_shape": (1, 8, 8)}, dataset="digits")
        class TagsNoneVAE(VanillaVAE):
            pretrained_tags = None
        class TagDictsVAE(VanillaVAE):
            pretrained_tags = {"digits": {"config": {"input_shape": (1, 8, 8)}, "dataset": "digits"}}
        class TagFieldVAE(VanillaVAE):
            pretrained_tags = {"digits": vaezoo.PretrainedTag({"latent_size": 3}, dataset="digits")}
        @dataclass(frozen=True)
        class NeedsGPUConfig(VanillaVAEConfig):
            def __post_init__(self):
                super().__post_init__()
                raise RuntimeError("no GPU found")
        class NoDefaultsVAE(VanillaVAE):
            config_class = NeedsGPUConfig
        class DictCapabilitiesVAE(VanillaVAE):
            capabilities = {"conditional": False}
        class RenamedVAE(VanillaVAE):
            registry_name = "other-name"
        class NumberCardVAE(VanillaVAE):
            pretrained_tags = {"digits": DIGITS}
        class BombCardVAE(VanillaVAE):
            pretrained_tags = {"digits": DIGITS}
        class HugeCardVAE(VanillaVAE):
            pretrained_tags = {"digits": DIGITS}
        class UnshippedVAE(VanillaVAE):
            pretrained_tags = {"digits": DIGITS}
    """),
    "robust_meta_interrupt": "raise KeyboardInterrupt\n",
    "robust_meta_exit": "import os\nos._exit(3)\n",
    "robust_meta_chatty": textwrap.dedent("""
        print("hello from the plugin")
        from vaezoo_plugins.vae_mlp import VanillaVAE
        class ChattyVAE(VanillaVAE):
            pass
    """),
}
METADATA_PLUGIN_ENTRY_POINTS = {
    "tags-none-vae": ("tags-none-plugin", "robust_meta_tags:TagsNoneVAE"),
    "tag-dicts-vae": ("tag-dicts-plugin", "robust_meta_tags:TagDictsVAE"),
    "tag-field-vae": ("tag-field-plugin", "robust_meta_tags:TagFieldVAE"),
    "no-defaults-vae": ("no-defaults-plugin", "robust_meta_tags:NoDefaultsVAE"),
    "dict-capabilities-vae": ("dict-capabilities-plugin", "robust_meta_tags:DictCapabilitiesVAE"),
    "renamed-vae": ("renamed-plugin", "robust_meta_tags:RenamedVAE"),
    "number-card-vae": ("number-card-plugin", "robust_meta_tags:NumberCardVAE"),
    "bomb-card-vae": ("bomb-card-plugin", "robust_meta_tags:BombCardVAE"),
    "huge-card-vae": ("huge-card-plugin", "robust_meta_tags:HugeCardVAE"),
    "unshipped-vae": ("unshipped-plugin", "robust_meta_tags:UnshippedVAE"),
    "interrupting-vae": ("interrupting-plugin", "robust_meta_interrupt:InterruptingVAE"),
    "exiting-vae": ("os-exit-plugin", "robust_meta_exit:ExitingVAE"),
    "chatty-vae": ("chatty-plugin", "robust_meta_chatty:ChattyVAE"),
}


def card_text(metrics_yaml: str) -> str:
    """A model card whose vaezoo block holds ``metrics_yaml`` (indented under test_metrics)."""
    return ("---\nlibrary_name: vaezoo\nvaezoo:\n  name: x.digits\n  dataset: digits\n  split: test\n  test_metrics:\n"
            + textwrap.indent(metrics_yaml, "    ") + "\n---\n\n# a card\n")


def yaml_bomb(levels: int = 9) -> str:
    """Billion laughs: nine aliases of nine aliases of ... a list, 9**levels strings once expanded."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines + [f"nll: *a{levels - 1}", "neg_elbo: 80.0"])


def metadata_plugin_site(tmp: Path) -> Path:
    """A site folder with the broken plugins above, their distributions and their shipped weights folders."""
    site = tmp / "site"
    site.mkdir(parents=True, exist_ok=True)
    for module, source in METADATA_PLUGIN_SOURCES.items():
        (site / f"{module}.py").write_text(source)
    for name, (distribution, target) in METADATA_PLUGIN_ENTRY_POINTS.items():
        info = site / f"{distribution.replace('-', '_')}-0.1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1.0\n")
        (info / "entry_points.txt").write_text(f"[vaezoo.models]\n{name} = {target}\n")
    cards = {"number-card-vae": card_text("nll: not measured\nneg_elbo: [1, 2]\nrecon: 20.5"),
             "bomb-card-vae": card_text(yaml_bomb()),
             "huge-card-vae": card_text("neg_elbo: 80.0\n" + "".join(f"m{i}: {i}.5\n" for i in range(20_000)))}
    for name, text in cards.items():
        (site / "weights" / f"{name}.digits").mkdir(parents=True)
        (site / "weights" / f"{name}.digits" / "README.md").write_text(text)
    unshipped = site / "weights" / "unshipped-vae.digits"  # the tag's folder, without its model.safetensors
    unshipped.mkdir(parents=True)
    (unshipped / "config.json").write_text(json.dumps({"architecture": "unshipped-vae", "config": {}}))
    return site


def metadata_case(name: str, argv: tuple[str, ...], expect: str, python: Callable[[Path], Any] | None = None) -> Case:
    return Case(PLUGIN_METADATA, name, argv, expect, setup=metadata_plugin_site, python=python, plugins=True)


PLUGIN_METADATA_CASES: list[Case] = [
    metadata_case("listing tags skips every broken plugin", ("list", "--pretrained"), ""),
    metadata_case("a built-in's info with broken plugins installed", ("info", "vae-mlp"), ""),
    metadata_case("a built-in tag's info with broken plugins installed", ("info", "cvae.digits", "--json"), ""),
    metadata_case("pretrained tags None", ("info", "tags-none-vae"), "TagsNoneVAE.pretrained_tags=None must be a dict",
                  python=build("tags-none-vae")),
    metadata_case("pretrained tags as plain dicts", ("info", "tag-dicts-vae"),
                  "pretrained_tags['digits'] is a dict, not a vaezoo.PretrainedTag", python=build("tag-dicts-vae")),
    metadata_case("tag config with an unknown field", ("info", "tag-field-vae.digits"),
                  "unknown config field 'latent_size' in TagFieldVAE.pretrained_tags['digits']", python=build("tag-field-vae")),
    metadata_case("config class cannot build its defaults", cli_train(name="no-defaults-vae"),
                  "config class NeedsGPUConfig cannot build its defaults (RuntimeError: no GPU found)",
                  python=build("no-defaults-vae")),
    metadata_case("capabilities not a Capabilities", ("info", "dict-capabilities-vae"), "is not a vaezoo.Capabilities"),
    metadata_case("import raises KeyboardInterrupt", cli_train(name="interrupting-vae"),
                  "failed to import: KeyboardInterrupt raised by the plugin's import itself", python=build("interrupting-vae")),
    metadata_case("import calls os._exit", ("info", "exiting-vae"), "its import called os._exit(3); uninstall or upgrade",
                  python=build("exiting-vae")),
    metadata_case("registry_name differs from the entry point", ("info", "renamed-vae"),
                  "RenamedVAE.registry_name is 'other-name', not 'renamed-vae'", python=build("renamed-vae")),
    metadata_case("card with non-numeric metrics", ("list", "number-card-vae.*", "--pretrained"), ""),
    metadata_case("card with a YAML bomb", ("info", "bomb-card-vae.digits", "--json"), ""),
    metadata_case("card header over the size cap", ("info", "huge-card-vae.digits"), ""),
    metadata_case("import prints to stdout", ("info", "chatty-vae", "--json"), ""),
    metadata_case("tag whose weights file is missing", ("eval", "unshipped-vae.digits", "--data", "digits"),
                  "no weights for 'unshipped-vae.digits': none ship with the installed package",
                  python=lambda tmp: vaezoo.from_pretrained("unshipped-vae.digits")),
]

# --- python api and sizes: bad values through the Python API; sizes bounded before any work ---------
def pretrained(name: str = "vae-mlp") -> Any:
    return vaezoo.from_pretrained(f"{name}.digits")


def call(function: Callable[[Any], Any], name: str = "vae-mlp") -> Callable[[Path], Any]:
    """The Python half of a case: ``function`` applied to the pretrained ``name.digits`` model."""
    return lambda tmp: function(pretrained(name))


def digits_batch(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8)


def trained_run(tmp: Path) -> None:
    """A finished one-epoch run in {tmp}/run."""
    from vaezoo.training.runs import train_run

    train_run("vae-mlp", "digits", tmp / "run", train_flags={"epochs": 1}, progress=False)


def scaffold(name: str) -> Callable[[Path], Any]:
    from vaezoo.scaffold import new_plugin

    return lambda tmp: new_plugin(name, tmp / "p")


def on_meta(model: Any) -> Any:
    return model.to("meta")


def explore_args(*extra: str) -> tuple[str, ...]:
    return ("explore", "vae-mlp.digits", "--data", "digits", *extra)


API_CASES = [
    Case(PYTHON_API, "sample(-1)", (), "n=-1 must be a positive integer", python=call(lambda m: m.sample(-1))),
    Case(PYTHON_API, "sample --n -1", ("sample", "vae-mlp.digits", "--n", "-1", "-o", "{tmp}/s.png"),
         "Invalid value for '--n'", exit_code=2),
    Case(PYTHON_API, "sample(2.5)", (), "n=2.5 must be a positive integer", python=call(lambda m: m.sample(2.5))),
    Case(PYTHON_API, "sample(True)", (), "n=True must be a positive integer", python=call(lambda m: m.sample(True))),
    Case(PYTHON_API, "sample at temperature NaN", ("sample", "vae-mlp.digits", "--temperature", "nan", "-o", "{tmp}/s.png"),
         "temperature=nan must be", python=call(lambda m: m.sample(2, temperature=math.nan))),
    Case(PYTHON_API, "sample at temperature Inf", ("augment", "vae-mlp.digits", "--n", "4", "--temperature", "inf", "-o",
                                                   "{tmp}/a.npz"), "temperature=inf must be",
         python=call(lambda m: m.sample(2, temperature=math.inf))),
    Case(PYTHON_API, "labels for an unconditional model's samples", (), "vae-mlp.digits is not conditional, so sample takes no labels",
         python=call(lambda m: m.sample(2, y=3))),
    Case(PYTHON_API, "iw_samples=1.5", (), "iw_samples=1.5 must be a positive integer",
         python=call(lambda m: m.log_likelihood(digits_batch(), iw_samples=1.5))),
    Case(PYTHON_API, "deprecated k=1.5", (), "iw_samples=1.5 must be a positive integer",
         python=call(lambda m: m.log_likelihood(digits_batch(), k=1.5))),
    Case(PYTHON_API, "chunk_size=0", (), "chunk_size=0 must be a positive integer",
         python=call(lambda m: m.log_likelihood(digits_batch(), chunk_size=0))),
    Case(PYTHON_API, "NaN given to log_likelihood", (), "x holds NaN or Inf values",
         python=call(lambda m: m.log_likelihood(torch.full((2, 1, 8, 8), math.nan)))),
    Case(PYTHON_API, "a batch of no examples to forward", (), "x holds 0 examples (shape (0, 1, 8, 8)); vae-mlp.digits needs at least one",
         python=call(lambda m: m(digits_batch(0)))),
    Case(PYTHON_API, "x with the wrong number of features", (), "x has shape (2, 64) but this model takes (B, 1, 8, 8)",
         python=call(lambda m: m.reconstruct(torch.rand(2, 64)))),
    Case(PYTHON_API, "x on another device than the model", (), "x is on cpu but the model is on meta; move it with x.to(model.device)",
         python=call(lambda m: on_meta(m).reconstruct(digits_batch()))),
    Case(PYTHON_API, "float labels for cvae", (), "y has dtype torch.float32; pass integer class labels",
         python=call(lambda m: m.sample(1, y=torch.tensor([1.5])), "cvae")),
    Case(PYTHON_API, "sample --label 1.5", ("sample", "cvae.digits", "--label", "1.5", "-o", "{tmp}/s.png"),
         "Invalid value for '--label'", exit_code=2),
    Case(PYTHON_API, "float labels given to cvae's encoder", (), "y has dtype torch.float32; pass integer class labels",
         python=call(lambda m: m.encode(digits_batch(1), torch.tensor([1.5])), "cvae")),
    Case(PYTHON_API, "label out of range given to cvae's decoder", (), "labels y hold 12..12; this model knows 0..9 (cvae.digits)",
         python=call(lambda m: m.eval().decode(torch.zeros(1, 8), torch.tensor([12])), "cvae")),
    Case(PYTHON_API, "label 2**64", ("sample", "cvae.digits", "--label", str(2**64), "-o", "{tmp}/s.png"),
         "=18446744073709551616 is out of range: cvae.digits knows labels 0..9",
         python=call(lambda m: m.sample(1, y=2**64), "cvae")),
    Case(PYTHON_API, "traversal span NaN", explore_args("--traverse", "--span", "nan", "-o", "{tmp}/t.npy"),
         "span=nan must be a number > 0", python=call(lambda m: vaezoo.apps.traverse(m, digits_batch(4), span=math.nan))),
    Case(PYTHON_API, "traversal span 0", explore_args("--traverse", "--span", "0", "-o", "{tmp}/t.png"),
         "span=0.0 must be a number > 0", python=call(lambda m: vaezoo.apps.traverse(m, digits_batch(4), span=0.0))),
    Case(PYTHON_API, "latent map of one example", explore_args("--n", "1", "-o", "{tmp}/m.csv"), ""),
    Case(PYTHON_API, "latent map of no example", (), "x holds 0 examples but a latent map needs at least 1",
         python=call(lambda m: vaezoo.apps.latent_map(m, digits_batch(0)))),
    Case(PYTHON_API, "an interpolation end that is a batch", (), "x_from holds 3 examples; an interpolation runs between two",
         python=call(lambda m: vaezoo.apps.interpolate(m, digits_batch(3), digits_batch(1)))),
    Case(PYTHON_API, "NaN scale of an attribute vector", (), "scale=nan must be a finite number",
         python=call(lambda m: vaezoo.apps.add_attribute(m, digits_batch(), torch.zeros(8), scale=math.nan))),
    Case(PYTHON_API, "timm encoder with a fixed input size", cli_train("--set", "encoder=timm:vit_tiny_patch16_224"),
         "encoder='timm:vit_tiny_patch16_224' cannot take input_shape=(1, 8, 8)",
         python=build("vae-mlp", encoder="timm:vit_tiny_patch16_224", input_shape=(1, 8, 8))),
    Case(PYTHON_API, "resume given the run's checkpoints folder", ("train", "vae-mlp", "--data", "digits", "--epochs", "2",
                                                                   "--quiet", "--resume", "--out", "{tmp}/run/checkpoints"),
         "", setup=trained_run),
    Case(PYTHON_API, "a new run inside a run's checkpoints folder", cli_train(name="vae-mlp")[:-1] + ("{tmp}/run/checkpoints",),
         "is inside the run folder", setup=trained_run),
    Case(SIZES, "sample --n 10**9", ("sample", "vae-mlp.digits", "--n", str(10**9), "-o", "{tmp}/s.npy"),
         "n=1000000000 asks for 1,000,000,000 examples of shape (1, 8, 8)", python=call(lambda m: m.sample(10**9))),
    Case(SIZES, "sample --n too many for a PNG grid", ("sample", "vae-mlp.digits", "--n", "100000", "-o", "{tmp}/s.png"),
         "a PNG grid of 100000 images"),
    Case(SIZES, "interpolate --steps 10**8", ("interpolate", "vae-mlp.digits", "--data", "digits", "--from", "0", "--to",
                                              "1", "--steps", str(10**8), "-o", "{tmp}/p.npy"), "steps=100000000 asks for",
         python=call(lambda m: vaezoo.apps.interpolate(m, digits_batch(1), digits_batch(1), steps=10**8))),
    Case(SIZES, "augment --n 10**8 --per-class", ("augment", "cvae.digits", "--n", str(10**8), "--per-class", "-o",
                                                  "{tmp}/a.npz"), "x 10 classes=1000000000 asks for",
         python=call(lambda m: vaezoo.apps.augment(m, 10**8, per_class=True), "cvae")),
    Case(SIZES, "traversal --steps 10**8", explore_args("--traverse", "--steps", str(10**8), "-o", "{tmp}/t.npy"),
         "steps=100000000 asks for", python=call(lambda m: vaezoo.apps.traverse(m, digits_batch(4), rows=1, steps=10**8))),
    Case(SIZES, "a layer of 10**8 units", cli_train("--set", "hidden_dims=[100000000]"), "over vaezoo's limit of 2**31",
         python=build("vae-mlp", hidden_dims=(10**7,))),
    Case(SIZES, "a model folder whose config is far larger than its weights", evaluate_dir(),
         "shape mismatches encoder.net.0.weight (32, 64) vs model (10000000, 64)",
         setup=corrupt(patch_config(hidden_dims=[10**7])), python=load_dir),
    Case(SIZES, "a 300-character plugin name", ("new-plugin", "a" * 300, "--dir", "{tmp}/p"),
         "has 300 characters; use at most 64", python=scaffold("a" * 300)),
]

# --- commands: what a user expects of each command (run folders, devices, hub, overlaps) ------------
def recorded_run(data: str = "digits", split_seed: int = 0) -> Callable[[Path], None]:
    """A model folder whose config.json records its training data, as a run folder's does."""
    def write(tmp: Path) -> None:
        folder = model_dir(tmp)
        config = json.loads((folder / "config.json").read_text())
        config["data"] = {"data": data.replace("{tmp}", str(tmp)), "data_dir": None, "split_seed": split_seed}
        (folder / "config.json").write_text(json.dumps(config))
    return write


def evaluate_source(source: str, **kwargs: Any) -> Callable[[Path], Any]:
    from vaezoo.eval.runs import eval_run

    return lambda tmp: eval_run(source.replace("{tmp}", str(tmp)), iw_samples=0, **kwargs)


def use_device(name: str) -> Callable[[Path], Any]:
    from vaezoo.core.distributed import resolve_device

    return lambda tmp: resolve_device(name)


def describe_source(source: str) -> Callable[[Path], Any]:
    from vaezoo.zoo.sources import source_info

    return lambda tmp: source_info(source.replace("{tmp}", str(tmp)))


COMMAND_CASES = [
    Case(COMMANDS, "eval on the train split a tag was trained on", ("eval", "vae-mlp.digits", "--split", "train"),
         "the train split of digits is what vae-mlp.digits was trained on",
         python=evaluate_source("vae-mlp.digits", split="train")),
    Case(COMMANDS, "eval on a test split another split seed reshuffles", ("eval", "vae-mlp.digits", "--split-seed", "1"),
         "--split-seed 1 reshuffles digits: ", python=evaluate_source("vae-mlp.digits", split_seed=1)),
    Case(COMMANDS, "eval on a reshuffled val split", ("eval", "cvae.digits", "--split", "val", "--split-seed", "5"),
         "rows of its val split were in the train split of cvae.digits"),
    Case(COMMANDS, "eval on the train split a run recorded", ("eval", "{tmp}/model", "--split", "train", "--data", "digits"),
         "the train split of digits is what", setup=recorded_run(), python=evaluate_source("{tmp}/model", split="train")),
    Case(COMMANDS, "eval of a run with another split seed than it recorded",
         ("eval", "{tmp}/model", "--split-seed", "0", "--iw-samples", "0"), "evaluate with --split-seed 7, the run's own",
         setup=recorded_run(split_seed=7)),
    Case(COMMANDS, "eval without --data of a model that records none", ("eval", "{tmp}/model"),
         "does not record the data it was trained on; pass --data", setup=model_dir, python=evaluate_source("{tmp}/model")),
    Case(COMMANDS, "eval without --data of a run whose data is gone", ("eval", "{tmp}/model"),
         "gone.npy, which does not exist from here", setup=recorded_run("{tmp}/gone.npy")),
    Case(COMMANDS, "eval split seed past 2**63", ("eval", "vae-mlp.digits", "--split-seed", str(2**64)),
         "split seed=18446744073709551616 must be an integer in 0.."),
    Case(COMMANDS, "eval without --data uses the run's record", ("eval", "{tmp}/model", "--iw-samples", "0"), "",
         setup=recorded_run(split_seed=7)),
    Case(COMMANDS, "eval without --data of a tag", ("eval", "hvae.digits", "--iw-samples", "0"), ""),
    Case(COMMANDS, "eval on training rows on purpose", ("eval", "vae-mlp.digits", "--split", "train", "--allow-overlap",
                                                        "--iw-samples", "0"), ""),
    Case(COMMANDS, "unknown device", ("eval", "vae-mlp.digits", "--device", "tpu"),
         "'tpu' is unknown; use auto, cpu, cuda, cuda:N or mps", exit_code=2, python=use_device("tpu")),
    Case(COMMANDS, "a GPU this machine lacks", ("eval", "vae-mlp.digits", "--device", "cuda:99"),
         "device 'cuda:99' is not available here; this machine has cpu", python=use_device("cuda:99")),
    Case(COMMANDS, "a GPU this machine lacks, for training", cli_train("--device", "cuda:99"),
         "device 'cuda:99' is not available here"),
    Case(COMMANDS, "an unknown device for an application", ("sample", "vae-mlp.digits", "--device", "gpu", "-o", "{tmp}/s.png"),
         "'gpu' is unknown", exit_code=2),
    Case(COMMANDS, "info of a model folder", ("info", "{tmp}/model"), "", setup=model_dir),
    Case(COMMANDS, "info of a model folder that does not load", ("info", "{tmp}/model"), "truncated or corrupted",
         setup=corrupt(cut_weights), python=describe_source("{tmp}/model")),
    Case(COMMANDS, "info of a path that is not there", ("info", "{tmp}/nowhere"),
         "is not a model directory or an hf-hub:ORG/NAME id", python=describe_source("{tmp}/nowhere")),
    Case(COMMANDS, "info of a malformed hub id", ("info", "hf-hub:no-org"), "is not a Hub repo id",
         python=describe_source("hf-hub:no-org")),
]

CASES: list[Case] = (NAME_CASES + DATA_CASES + WEIGHT_CASES + PLUGIN_CASES + DATA_BOMB_CASES + PLUGIN_METADATA_CASES
                     + API_CASES + COMMAND_CASES)


# --- faults: a child process that injects one, then the parent resumes ----------------------------
FAULTS = (
    "kill-mid-step",  # SIGKILL inside a training step
    "kill-writing-checkpoint",  # SIGKILL with a random part of the new checkpoint on disk
    "kill-before-rename",  # SIGKILL with the new checkpoint complete but not yet renamed into place
    "kill-after-rename",  # SIGKILL between the checkpoint and its last.json summary
    "kill-writing-metrics",  # SIGKILL half-way through a metrics.jsonl line
    "disk-full",  # ENOSPC part-way through a checkpoint write
    "file-size-limit",  # a real EFBIG: RLIMIT_FSIZE lowered, SIGXFSZ ignored, before the next checkpoint
    "nan-loss",  # the loss turns NaN at a step of a later epoch
)

FAULT_CHILD = textwrap.dedent('''
    """Runs `vaezoo ARGS...` with one fault injected: python -c FAULT_CHILD FAULT AT FRACTION ARGS..."""
    import errno, json, os, resource, signal, sys
    import vaezoo.io.tensors as checkpoint  # save_tensors writes through this module's atomic_write
    from vaezoo.training import loop  # StageStep: one training step
    from vaezoo.training import run_folder  # RunFolder.append_metrics: one metrics.jsonl line
    from vaezoo.cli import main

    fault, at, fraction, args = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
    counts = {"step": 0, "checkpoint": 0, "metrics": 0}

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    original_atomic_write = checkpoint.atomic_write

    def faulty_atomic_write(path, write):
        if path.name != "last.safetensors":
            return original_atomic_write(path, write)
        counts["checkpoint"] += 1
        if counts["checkpoint"] != at:
            return original_atomic_write(path, write)

        def torn(tmp):
            write(tmp)
            if fault == "kill-writing-checkpoint":
                size = os.path.getsize(tmp)
                os.truncate(tmp, int(size * fraction))
                die()
            if fault == "kill-before-rename":
                die()
            if fault == "disk-full":
                os.truncate(tmp, int(os.path.getsize(tmp) * fraction))
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        if fault == "file-size-limit":  # the real kernel limit, below this checkpoint's size
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            limit = max(4096, int(os.path.getsize(path) * fraction))
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
            return original_atomic_write(path, write)
        original_atomic_write(path, torn)
        if fault == "kill-after-rename":
            die()

    checkpoint.atomic_write = faulty_atomic_write

    original_append = run_folder.RunFolder.append_metrics

    def faulty_append(self, record):
        counts["metrics"] += 1
        if fault == "kill-writing-metrics" and counts["metrics"] == at:
            line = json.dumps(record) + "\\n"
            with open(self.metrics_path, "a") as handle:
                handle.write(line[: int(len(line) * fraction)])
            die()
        return original_append(self, record)

    run_folder.RunFolder.append_metrics = faulty_append

    original_forward = loop.StageStep.forward

    def faulty_forward(self, x, y):
        counts["step"] += 1
        out = original_forward(self, x, y)
        if fault == "kill-mid-step" and counts["step"] == at:
            die()
        if fault == "nan-loss" and counts["step"] >= at:
            out.loss = out.loss * float("nan")
        return out

    loop.StageStep.forward = faulty_forward
    main(args)
''')

EPOCHS = 4
STEPS_PER_EPOCH = 1437 // 64  # digits' train split at batch 64


def train_args(out: Path, resume: bool = False) -> list[str]:
    """A small, seeded, deterministic run on digits: killed and resumed, it must end as it would have."""
    if resume:
        return ["train", "vae-mlp", "--resume", "--quiet", "--out", str(out)]
    return ["train", "vae-mlp", "--data", "digits", "--epochs", str(EPOCHS), "--batch-size", "64", "--seed", "1",
            "--quiet", "--set", "hidden_dims=[32]", "--set", "latent_dim=4", "--out", str(out)]


def fault_point(fault: str, rng: Any) -> tuple[int, float]:
    """(which step, checkpoint or metrics line, as a 1-based count; a fraction of its bytes), drawn from rng."""
    if fault in ("kill-mid-step", "nan-loss"):
        low = STEPS_PER_EPOCH + 1 if fault == "nan-loss" else 1  # NaN after the first epoch, so one is good
        return rng.randint(low, EPOCHS * STEPS_PER_EPOCH), 0.0
    first = 2 if fault in ("disk-full", "file-size-limit") else 1  # a previous checkpoint to keep
    return rng.randint(first, EPOCHS), rng.uniform(0.05, 0.95)


def run_with_fault(fault: str, at: int, fraction: float, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", FAULT_CHILD, fault, str(at), str(fraction), *args]
    # The same intra-op thread count as this process, so that a run resumed here is bit-identical.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def error_lines(stderr: str) -> list[str]:
    """The lines of stderr that are not one-line warnings."""
    return [line for line in stderr.strip().splitlines() if line and not line.startswith("warning: ")]


# --- random configs: valid ranges per field, for test_properties.py and the benchmark's sweep -------
# ("int", low, high) | ("float", low, high) | ("choice", *values) | ("ints", min_len, max_len, low, high)
VALID_FIELDS: dict[str, tuple] = {
    "latent_dim": ("int", 1, 6),
    "hidden_dims": ("ints", 0, 2, 1, 24),
    "conv_channels": ("ints", 1, 3, 1, 12),
    "likelihood": ("choice", "bernoulli", "gaussian", "logistic_mixture"),  # the mixture: images only, see below
    "mixture_components": ("int", 1, 4),
    "kl_warmup_steps": ("int", 0, 50),
    "beta": ("float", 0.0, 5.0),
    "objective": ("choice", "beta", "capacity"),
    "gamma": ("float", 0.0, 100.0),
    "capacity_max": ("float", 0.0, 30.0),
    "label_hidden": ("int", 1, 24),
    "num_classes": ("int", 1, 5),  # conditional variants only: the unconditional ones keep the data's 0
    "latent_dims": ("ints", 1, 3, 1, 6),
    "hidden_dim": ("int", 1, 24),
    "num_blocks": ("int", 1, 2),
    "free_bits": ("float", 0.0, 1.0),
    "codebook_size": ("int", 2, 16),
    "code_dim": ("int", 1, 8),
    "num_latent_codes": ("int", 1, 6),
    "beta_commit": ("float", 0.0, 1.0),
    "codebook_update": ("choice", "ema", "loss"),
    "dead_code_threshold": ("float", 0.0, 2.0),
    "flow_steps": ("int", 0, 3),  # iaf-vae
    "flow_hidden": ("int", 1, 24),
    "pseudo_inputs": ("int", 1, 12),  # vamp-vae
}
# Per variant (by registry name), fields whose valid values differ from VALID_FIELDS' (the same name holds
# another set of choices there), or None for a field the variant accepts at one value only.
VARIANT_FIELDS: dict[str, dict[str, tuple | None]] = {
    "iwae": {
        "objective": ("choice", "iwae", "miwae", "piwae", "ciwae"),
        "iw_samples": ("int", 1, 4),
        "ciwae_beta": ("float", 0.0, 1.0),
        "kl_warmup_steps": None,  # refused unless 0: the importance-weighted bound has no KL term to warm up
    },
    "miwae": {
        "iw_samples": ("int", 1, 4),
        "kl_warmup_steps": None,  # refused unless 0: the MIWAE bound has no KL term to warm up
    },
    "info-vae": {"alpha": ("float", 0.0, 1.0), "kernel": ("choice", "imq", "rbf")},
    "beta-tcvae": {"estimator": ("choice", "mss", "mws"), "alpha": ("float", 0.0, 2.0), "gamma": ("float", 0.0, 2.0),
                   "dataset_size": ("int", 0, 100)},
    "dip-vae": {"dip_type": ("choice", "i", "ii"), "lambda_od": ("float", 0.0, 20.0)},
    "factor-vae": {"gamma": ("float", 0.0, 40.0)},
    "wae": {
        "wae_lambda": ("float", 0.0, 20.0),
        "kernel": ("choice", "imq", "rbf"),
        "kl_warmup_steps": None,  # refused unless 0: the WAE objective has no KL term
    },
}
MAX_SIDE, MAX_FEATURES, MAX_BATCH = 10, 40, 8


def field_specs(model_class: type) -> dict[str, tuple]:
    """{field: valid range} for the fields of ``model_class``'s config that the random sweeps vary."""
    from vaezoo.core.config import config_fields

    specs = {**VALID_FIELDS, **VARIANT_FIELDS.get(model_class.registry_name, {})}
    fields = config_fields(model_class.config_class)
    # Fields the variant does not read are refused away from their default; derived ones follow their source.
    skipped = set(model_class.config_class.unused_fields) | set(model_class.config_class.derived_fields)
    return {f: spec for f, spec in specs.items() if spec is not None and f in fields and f not in skipped
            and (f != "num_classes" or model_class.is_conditional)}


def varied_fields(model_class: type) -> list[str]:
    """The fields of ``model_class``'s config that the random sweeps vary."""
    return list(field_specs(model_class))


def check_random_model(name: str, input_shape: tuple[int, ...], batch: int, values: dict[str, Any]) -> None:
    """Build ``name`` (tiny preset) with ``values``; its forward, backward, samples, reconstructions and
    log-likelihood must have the right shapes and finite values."""
    from vaezoo.core.likelihoods import param_shape

    if values.get("likelihood") == "logistic_mixture" and len(input_shape) != 3:
        values = {**values, "likelihood": "bernoulli"}  # the mixture models 8-bit image pixels; vectors are refused
    model = vaezoo.create_model(name, preset="tiny", input_shape=input_shape, **values)
    x = torch.rand(batch, *input_shape)
    y = torch.randint(0, model.config.num_classes, (batch,)) if model.is_conditional else None
    model.train()
    out = model(x, y)
    assert out.loss.dim() == 0 and bool(torch.isfinite(out.loss)), f"loss {out.loss}"
    assert out.neg_elbo.shape == (batch,) and out.params.shape == (batch, *param_shape(model.config))
    figures = {k: v for k, v in out.scalars().items() if k != "kl" or model.capabilities.elbo}  # no ELBO: kl is +inf
    assert all(bool(torch.isfinite(v)) for v in figures.values()), out.scalars()
    out.loss.backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)
    model.eval()
    assert model.sample(batch, y=y).shape == x.shape
    assert model.reconstruct(x, y).shape == x.shape
    if model.has_log_likelihood:
        log_px = model.log_likelihood(x, y, iw_samples=3)
        assert log_px.shape == (batch,) and bool(torch.isfinite(log_px).all())


# --- what a faulty run must leave behind -----------------------------------------------------------
DISK_REASONS = {"disk-full": "the disk is full", "file-size-limit": "file-size limit"}


def fault_problems(fault: str, at: int, child: subprocess.CompletedProcess, run: Path) -> list[str]:
    """What is wrong with how the faulty child ended (empty: it ended as it must)."""
    from vaezoo.errors import CheckpointError
    from vaezoo.io.tensors import read_tensors

    if fault.startswith("kill"):
        return [] if child.returncode == -9 else [f"exit code {child.returncode}, not SIGKILL: {child.stderr[-300:]}"]
    lines = error_lines(child.stderr)
    if child.returncode != 1 or len(lines) != 1 or not lines[0].startswith("error: "):
        return [f"exit code {child.returncode}, stderr {lines[-3:]}"]
    line, problems = lines[0], []
    checkpoint = run / "checkpoints" / "last.safetensors"
    if fault in DISK_REASONS:
        wanted = [f"error: cannot write {checkpoint}: ", DISK_REASONS[fault], "continue the run with --resume"]
        problems += [f"{part!r} not in {line!r}" for part in wanted if part not in line]
        try:
            _, metadata = read_tensors(checkpoint)
            if json.loads(metadata["state"])["epochs_done"] != at - 1:
                problems.append(f"the kept checkpoint is not the one of epoch {at - 1}")
        except CheckpointError as error:
            problems.append(f"the previous checkpoint was lost: {error}")
        problems += [f"temporary file left: {p.name}" for p in checkpoint.parent.glob("*.tmp")]
        return problems
    epoch = math.ceil(at / STEPS_PER_EPOCH)  # nan-loss
    wanted = [f"error: training diverged in stage 'main' at epoch {epoch}",
              f"reset to its last good weights, from epoch {epoch - 1}, saved to {run / 'model.safetensors'}",
              "the last good checkpoint is kept", "lower the learning rate"]
    problems += [f"{part!r} not in {line!r}" for part in wanted if part not in line]
    from safetensors.torch import load_file

    exported, kept = load_file(run / "model.safetensors"), load_file(checkpoint)
    if not all(torch.equal(exported[k], kept[f"model.{k}"]) and bool(torch.isfinite(exported[k]).all()) for k in exported):
        problems.append("model.safetensors does not hold the last good (finite) weights of the checkpoint")
    return problems


def finished_problems(run: Path, reference: dict[str, torch.Tensor]) -> list[str]:
    """What differs between a resumed run and the uninterrupted one (empty: nothing was lost)."""
    from safetensors.torch import load_file

    problems = []
    weights = load_file(run / "model.safetensors")
    if weights.keys() != reference.keys() or not all(torch.equal(weights[k], reference[k]) for k in reference):
        problems.append("the resumed run ended with other weights than the uninterrupted one")
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    if epochs != list(range(1, EPOCHS + 1)):
        problems.append(f"metrics.jsonl holds epochs {epochs}, not 1..{EPOCHS}")
    if json.loads((run / "checkpoints" / "last.json").read_text())["epochs_done"] != EPOCHS:
        problems.append("checkpoints/last.json does not describe the last checkpoint")
    problems += [f"temporary file left: {p.name}" for folder in (run, run / "checkpoints") for p in folder.glob("*.tmp")]
    return problems


# Values no field of the type accepts, under the zoo's convention (see test_properties.py).
INVALID_EXAMPLES: dict[str, list[Any]] = {
    "int": [-1, -(10**9), "ten", 0.5],
    "float": [math.nan, math.inf, -math.inf, -1.0, "fast"],
    "bool": [2, "maybe"],
    "str": ["no-such-choice", 3],
    "tuple": [(0,), (-2, 4), ["a"]],
}


def type_key(hint: Any) -> str:
    import typing

    if hint in (bool, int, float, str):
        return hint.__name__
    if typing.get_origin(hint) is tuple:
        return "tuple"
    if float in typing.get_args(hint):
        return "float"
    raise ValueError(f"no invalid examples for {hint!r}")
