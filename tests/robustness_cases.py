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
    Case(NAMES, "unknown model", ("info", "vq-vea"), "unknown model 'vq-vea' (did you mean 'vq-vae'?)",
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
DATA_BOMB_CASES: list[Case] = []

# --- plugin metadata: broken tags, cards and configs; a broken plugin is reported once and skipped ---
PLUGIN_METADATA_CASES: list[Case] = []

# --- python api and sizes: bad values through the Python API; sizes bounded before any work ---------
API_CASES: list[Case] = []

# --- commands: what a user expects of each command (run folders, devices, hub, overlaps) ------------
COMMAND_CASES: list[Case] = []

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
    "likelihood": ("choice", "bernoulli", "gaussian"),
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
}
MAX_SIDE, MAX_FEATURES, MAX_BATCH = 10, 40, 8


def varied_fields(model_class: type) -> list[str]:
    """The fields of ``model_class``'s config that the random sweeps vary."""
    from vaezoo.core.config import config_fields

    fields = [f for f in VALID_FIELDS if f in config_fields(model_class.config_class)]
    return [f for f in fields if f != "num_classes" or model_class.is_conditional]


def check_random_model(name: str, input_shape: tuple[int, ...], batch: int, values: dict[str, Any]) -> None:
    """Build ``name`` (tiny preset) with ``values``; its forward, backward, samples, reconstructions and
    log-likelihood must have the right shapes and finite values."""
    model = vaezoo.create_model(name, preset="tiny", input_shape=input_shape, **values)
    x = torch.rand(batch, *input_shape)
    y = torch.randint(0, model.config.num_classes, (batch,)) if model.is_conditional else None
    model.train()
    out = model(x, y)
    assert out.loss.dim() == 0 and bool(torch.isfinite(out.loss)), f"loss {out.loss}"
    assert out.neg_elbo.shape == (batch,) and out.params.shape == x.shape
    assert all(bool(torch.isfinite(v)) for v in out.scalars().values()), out.scalars()
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
