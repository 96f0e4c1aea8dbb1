"""The application commands: each writes what its output's extension names, with contents that mean something,
and every misuse is one line on stderr with exit code 1."""
from __future__ import annotations

import csv
import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import vaezoo
from vaezoo.cli import main
from vaezoo.data import TensorData, load_data


def run(*args: str):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def ok(*args: str) -> str:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result.output


def no_temp_files(folder) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_sample_writes_the_asked_label_as_npz_and_png(tmp_path, digits_classifier):
    output = ok("sample", "cvae.digits", "--n", 40, "--label", 3, "--seed", 1, "-o", tmp_path / "threes.npz")
    assert "wrote 40 samples" in output
    saved = np.load(tmp_path / "threes.npz")
    assert saved["x"].shape == (40, 1, 8, 8) and saved["y"].tolist() == [3] * 40
    with torch.no_grad():
        assert float((digits_classifier(torch.from_numpy(saved["x"])).argmax(1) == 3).float().mean()) > 0.9
    ok("sample", "vq-vae.digits", "--n", 16, "-o", tmp_path / "grid.png")
    width, height = Image.open(tmp_path / "grid.png").size
    assert 8 * 64 <= width < 8 * 80 and 2 * 64 <= height < 2 * 64 + 80  # 8 per row, 8x8 shown at 64x64, and a title
    assert no_temp_files(tmp_path)


def test_reconstruct_puts_originals_above_reconstructions(tmp_path, digits_splits):
    output = ok("reconstruct", "vae-mlp.digits", "--data", "digits", "--n", 16, "-o", tmp_path / "recon.npz")
    saved = np.load(tmp_path / "recon.npz")
    assert np.array_equal(saved["original"], digits_splits.test.x[:16].numpy())
    error = float(((saved["x"] - saved["original"]) ** 2).mean())
    assert error < 0.04 and f"{error:.4f}" in output  # measured 0.023; the mean image is 0.074 away
    ok("reconstruct", "vae-mlp.digits", "--data", "digits", "--n", 16, "-o", tmp_path / "recon.png")
    width, height = Image.open(tmp_path / "recon.png").size
    assert width >= 8 * 64 and 4 * 64 <= height < 4 * 64 + 80  # 2 x (originals, reconstructions), labelled


def test_interpolate_path_runs_between_the_two_examples(tmp_path, digits_splits):
    ok("interpolate", "vae-mlp.digits", "--data", "digits", "--from", 3, "--to", 9, "--steps", 6, "--method", "slerp",
       "-o", tmp_path / "path.npy")
    path = np.load(tmp_path / "path.npy")
    start, end = digits_splits.test.x[3].numpy(), digits_splits.test.x[9].numpy()
    assert path.shape == (6, 1, 8, 8)
    to_start = [float(((image - start) ** 2).mean()) for image in path]
    to_end = [float(((image - end) ** 2).mean()) for image in path]
    assert to_start[0] < to_start[-1] and to_end[-1] < to_end[0]  # it leaves one and arrives at the other


def test_impute_keeps_observed_values_and_beats_the_mean(tmp_path, digits_splits):
    x = digits_splits.test.x[:50].numpy().astype(np.float64)
    mask = np.zeros_like(x, dtype=bool)
    mask[:, :, 4:, :] = True  # the bottom half
    holes = x.copy()
    holes[:5, 0, 0, 0] = np.nan  # NaN is missing too
    np.save(tmp_path / "x.npy", holes)
    np.save(tmp_path / "m.npy", mask)
    output = ok("impute", "vae-mlp.digits", "--input", tmp_path / "x.npy", "--mask", tmp_path / "m.npy",
                "--method", "mwg", "-o", tmp_path / "filled.npy")
    assert "filled 1605 missing values in 50 examples" in output  # 50 * 32 + 5
    filled = np.load(tmp_path / "filled.npy")
    missing = mask | np.isnan(holes)
    assert filled.dtype == np.float64 and filled.shape == x.shape and not np.isnan(filled).any()
    assert np.array_equal(filled[~missing], holes[~missing])  # bit for bit
    train_mean = digits_splits.train.x.mean(0).numpy()
    assert ((filled - x)[mask] ** 2).mean() < ((np.broadcast_to(train_mean, x.shape) - x)[mask] ** 2).mean()


@pytest.mark.slow
@pytest.mark.parametrize("tag, batch", [("vae-mlp.fmnist", 64), ("hvae.fmnist", 64), ("hvae.fmnist", 1)])
def test_impute_inpaints_fashion_mnist_better_than_the_training_mean_from_the_defaults(tmp_path, tag, batch):
    """The bottom half of every image hidden, as in inpainting: no observed value in those columns."""
    try:
        fashion = load_data("fashion-mnist")
    except vaezoo.DataError as error:
        pytest.skip(str(error))
    x = fashion.test.x[:64].numpy()
    holes = x.copy()
    holes[:, :, 14:, :] = np.nan
    filled = []
    for first in range(0, len(x), batch):
        np.save(tmp_path / "x.npy", holes[first:first + batch])
        output = ok("impute", tag, "--input", tmp_path / "x.npy", "-o", tmp_path / "filled.npy")
        assert "(importance)" in output
        filled.append(np.load(tmp_path / "filled.npy"))
        if batch == 1 and first == 15:
            x, holes = x[:16], holes[:16]  # one image at a time is slow; 16 show it
            break
    filled = np.concatenate(filled)
    hidden = np.isnan(holes)
    mse = float(((filled - x)[hidden] ** 2).mean())
    train_mean = fashion.train.x.mean(0).numpy()
    mse_mean_fill = float(((np.broadcast_to(train_mean, x.shape) - x)[hidden] ** 2).mean())
    print(f"{tag} batch {batch}: imputation MSE {mse:.4f} vs training mean {mse_mean_fill:.4f}")
    assert mse < 0.75 * mse_mean_fill  # measured on 256 images: vae-mlp 0.038 vs 0.095, hvae 0.055 vs 0.095


def test_impute_flattened_rows_and_labels_for_a_cvae(tmp_path, digits_splits):
    x = digits_splits.test.x[:10].flatten(1).numpy().copy()  # (10, 64) float32; a copy: the split is shared
    x[:, 32:] = np.nan
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", digits_splits.test.y[:10].numpy())
    ok("impute", "cvae.digits", "--input", tmp_path / "x.npy", "--labels", tmp_path / "y.npy", "-o", tmp_path / "f.npz")
    saved = np.load(tmp_path / "f.npz")
    assert saved["x"].shape == (10, 64) and saved["missing"][:, 32:].all() and not saved["missing"][:, :32].any()
    assert np.array_equal(saved["x"][:, :32], x[:, :32])


def test_transfer_reports_the_classifier_reading(tmp_path, digits_classifier):
    output = ok("transfer", "cvae.digits", "--data", "digits", "--to-label", 4, "--n", 12, "-o", tmp_path / "fours.npz")
    saved = np.load(tmp_path / "fours.npz")
    assert saved["x"].shape == (12, 1, 8, 8) and 4 not in saved["y"]
    with torch.no_grad():
        accuracy = float((digits_classifier(torch.from_numpy(saved["x"])).argmax(1) == 4).float().mean())
    assert accuracy > 0.8 and f"reads {accuracy:.0%} as class 4" in output


def test_explore_map_as_csv_and_traversal_grid(tmp_path):
    ok("explore", "hvae.digits", "--data", "digits", "-o", tmp_path / "map.csv")
    with open(tmp_path / "map.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 180 and set(rows[0]) == {"x", "y", "label"}
    points = np.array([[float(r["x"]), float(r["y"])] for r in rows])
    labels = np.array([int(r["label"]) for r in rows])
    centroids = np.stack([points[labels == c].mean(0) for c in range(10)])
    nearest = np.linalg.norm(points[:, None] - centroids[None], axis=2).argmin(1)
    assert (nearest == labels).mean() > 0.3  # nearest class centroid in 2-D; chance is 0.1
    ok("explore", "vae-mlp.digits", "--data", "digits", "--method", "tsne", "-o", tmp_path / "map.png")
    assert Image.open(tmp_path / "map.png").size[0] > 300
    output = ok("explore", "beta-vae.digits", "--data", "digits", "--traverse", "--rows", 4, "--steps", 5,
                "-o", tmp_path / "traversal.png")
    assert "latent dims" in output
    width, height = Image.open(tmp_path / "traversal.png").size
    assert width >= 5 * 64 and 4 * 64 <= height < 4 * 64 + 160  # 4 dims of 5 steps, labelled, under a title


def test_augment_writes_balanced_labelled_examples(tmp_path):
    ok("augment", "cvae.digits", "--n", 7, "--per-class", "-o", tmp_path / "synth.npz")
    saved = np.load(tmp_path / "synth.npz")
    assert saved["x"].shape == (70, 1, 8, 8) and np.bincount(saved["y"]).tolist() == [7] * 10
    ok("augment", "vae-mlp.digits", "--n", 12, "-o", tmp_path / "synth.npy")
    assert np.load(tmp_path / "synth.npy").shape == (12, 1, 8, 8)


def test_anomaly_on_a_csv_table_with_a_model_of_the_normal_rows(tmp_path):
    from sklearn.datasets import load_breast_cancer
    from sklearn.metrics import roc_auc_score

    table = load_breast_cancer()
    is_malignant = (table.target == 0).astype(int)  # 212 malignant (anomalies), 357 benign (normal)
    with open(tmp_path / "cells.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([f"f{i}" for i in range(30)] + ["label"])
        writer.writerows([*map(float, row), label] for row, label in zip(table.data, is_malignant))
    splits = load_data(str(tmp_path / "cells.csv"), seed=0)  # the table, min-max scaled as the CLI will read it

    def benign(part):
        return TensorData(part.x[part.y == 0], part.y[part.y == 0])

    torch.manual_seed(0)
    model = vaezoo.create_model("vae-mlp", input_shape=(30,), hidden_dims=(64,), latent_dim=4)
    vaezoo.train(model, dataclasses.replace(splits, train=benign(splits.train), val=benign(splits.val)), epochs=200,
                 batch_size=64, lr=2e-3, seed=0, progress=False, out_dir=None)
    model.save_pretrained(str(tmp_path / "benign-model"))

    output = ok("anomaly", tmp_path / "benign-model", "--data", tmp_path / "cells.csv", "--normal-classes", "0",
                "-o", tmp_path / "scores.csv")
    with open(tmp_path / "scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(splits.test) and set(rows[0]) == {"index", "score", "flagged", "label", "anomaly"}
    truth = [int(r["anomaly"]) for r in rows]
    auroc = roc_auc_score(truth, [float(r["score"]) for r in rows])
    print(output.strip())
    assert auroc > 0.75 and f"AUROC {auroc:.4f}" in output  # measured 0.87
    flagged = np.array([int(r["flagged"]) for r in rows])
    assert flagged[np.array(truth) == 1].mean() > 2 * flagged[np.array(truth) == 0].mean()


@pytest.mark.parametrize("args, message", [
    (["sample", "vae-mlp.digits", "--label", "3", "-o", "s.png"],
     "vae-mlp.digits is not conditional, so it takes no label (label=3)"),
    (["sample", "cvae.digits", "--label", "12", "-o", "s.png"], "label=12 is out of range: cvae.digits knows labels 0..9"),
    (["sample", "cvae.digits", "-o", "s.gif"], "output 's.gif' has extension '.gif'; samples writes .png, .npy, .npz"),
    (["reconstruct", "hvae.digits", "--data", "fashion-mnist", "-o", "r.png"], "has examples of shape (1, 28, 28)"),
    (["interpolate", "vae-mlp.digits", "--data", "digits", "--from", "0", "--to", "180", "-o", "p.png"],
     "--to 180 is out of range: the test split of 'digits' has 180 examples (0..179)"),
    (["interpolate", "vq-vae.digits", "--data", "digits", "--from", "0", "--to", "1", "--method", "slerp", "-o", "p.png"],
     "slerp needs a Gaussian posterior"),
    (["transfer", "vae-mlp.digits", "--data", "digits", "--to-label", "1", "-o", "t.png"],
     "vae-mlp.digits is not conditional, but style transfer"),
    (["transfer", "cvae.digits", "--data", "digits", "--to-label", "10", "-o", "t.png"], "--to-label=10 is out of range"),
    (["anomaly", "vae-mlp.digits", "--data", "digits", "--normal-classes", "1,x", "-o", "a.csv"],
     "--normal-classes '1,x' must be comma-separated class ids"),
    (["anomaly", "vae-mlp.digits", "--data", "digits", "--normal-classes", "11", "-o", "a.csv"],
     "--normal-classes [11] are not classes of 'digits'"),
    (["anomaly", "vae-mlp.digits", "--data", "digits", "-o", "a.png"], "scores writes .csv"),
    (["anomaly", "vq-vae.digits", "--data", "digits", "--method", "iwae", "-o", "a.csv"],
     "has no importance-weighted likelihood; score it by -ELBO"),
    (["explore", "vq-vae.digits", "--data", "digits", "--traverse", "-o", "t.png"], "a latent traversal needs a Gaussian"),
    (["augment", "vae-mlp.digits", "--n", "5", "--per-class", "-o", "a.npz"], "drop per_class (--per-class)"),
    (["impute", "vae-mlp.digits", "--input", "missing.npy", "-o", "f.npy"], "--input file missing.npy does not exist"),
])
def test_misuse_is_one_line_and_exit_1(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(*args)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file


def test_impute_input_problems_are_one_line(tmp_path):
    np.save(tmp_path / "x.npy", np.full((3, 1, 8, 8), 0.5))
    np.save(tmp_path / "bad_mask.npy", np.zeros((3, 1, 8, 7), dtype=bool))
    np.save(tmp_path / "ints.npy", np.zeros((3, 64), dtype=np.uint8))
    np.save(tmp_path / "wide.npy", np.zeros((3, 65)))
    cases = [
        (["--input", tmp_path / "x.npy", "--mask", tmp_path / "bad_mask.npy"], "--mask"),
        (["--input", tmp_path / "ints.npy"], "holds uint8 values; store floats"),
        (["--input", tmp_path / "wide.npy"], "holds shape (3, 65) but vae-mlp.digits takes (N, 1, 8, 8)"),
        (["--input", tmp_path / "x.npy", "--method", "mwg", "--iterations", "0"], "--iterations"),
    ]
    for options, message in cases:
        result = run("impute", "vae-mlp.digits", *options, "-o", tmp_path / "out.npy")
        assert result.exit_code in (1, 2) and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    result = run("impute", "hvae.digits", "--input", tmp_path / "x.npy", "--method", "mwg", "-o", tmp_path / "o.npy")
    assert result.exit_code == 1 and "use method='importance'" in result.stderr
    result = run("impute", "cvae.digits", "--input", tmp_path / "x.npy", "-o", tmp_path / "o.npy")
    assert result.exit_code == 1 and "pass --labels y.npy" in result.stderr
    assert not (tmp_path / "out.npy").exists() and not (tmp_path / "o.npy").exists()


def test_a_real_process_prints_one_line_and_exits_1(tmp_path):
    result = subprocess.run([sys.executable, "-m", "vaezoo.cli", "transfer", "hvae.digits", "--data", "digits",
                             "--to-label", "2", "-o", str(tmp_path / "t.png")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: hvae.digits is not conditional, but style transfer (encode with the true label, decode with another) "
        "needs a conditional model (`vaezoo list` shows them; see `vaezoo info NAME`)"
    ]
