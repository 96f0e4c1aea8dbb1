"""The README's application gallery: one picture per application, from the shipped ``.fmnist`` tags.

    python3 benchmarks/gallery.py [--out docs/gallery]

Writes generation, reconstruction, interpolation, anomaly, imputation, transfer, explore, traversal and
augmentation PNGs (each well under 200 KB) and prints the figures each one stands for: reconstruction
and interpolation errors, anomaly AUROC, imputation MSE against filling with the training mean, how
often the shipped classifier reads transferred images as their target, and the accuracy of a
low-data classifier with and without cvae samples. Everything is seeded; no model is trained.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import print_header  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo import apps  # noqa: E402
from vaezoo.data import FASHION_MNIST_CLASSES, load_data  # noqa: E402
from vaezoo.eval.classifier import load_classifier  # noqa: E402

SHORT_NAMES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot"]


def grid_image(images: torch.Tensor, nrow: int) -> np.ndarray:
    """(N, 1, H, W) in [0, 1] -> an (h, w) array with 1-pixel white gaps, for imshow."""
    from torchvision.utils import make_grid

    return make_grid(images.clamp(0, 1), nrow=nrow, padding=1, pad_value=1.0)[0].numpy()


def save_figure(figure, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(figure)
    print(f"  -> {path} ({path.stat().st_size / 1024:.0f} KB)")


def show(axis, images: torch.Tensor, nrow: int, title: str) -> None:
    axis.imshow(grid_image(images, nrow), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axis.set_title(title, fontsize=9)
    axis.axis("off")


def generation(out: Path) -> None:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    for axis, tag in zip(axes, ("vae-mlp.fmnist", "hvae.fmnist", "vq-vae.fmnist")):
        show(axis, apps.generate(vaezoo.from_pretrained(tag), 48, seed=0), 8, f"vaezoo sample {tag} --n 48")
    save_figure(figure, out / "generation.png")


def reconstruction(out: Path, test) -> None:
    import matplotlib.pyplot as plt

    model = vaezoo.from_pretrained("vae-mlp.fmnist")
    x = test.x[:24]
    recon = apps.reconstruct(model, x)
    print(f"reconstruction: mean squared error {float((recon - x).pow(2).mean()):.4f} per pixel (first 24 test images)")
    rows = torch.cat([part for i in range(0, 24, 12) for part in (x[i:i + 12], recon[i:i + 12])])
    figure, axis = plt.subplots(figsize=(8, 3.2))
    show(axis, rows, 12, "vaezoo reconstruct vae-mlp.fmnist: originals above, reconstructions below")
    save_figure(figure, out / "reconstruction.png")


def interpolation(out: Path, test, train) -> None:
    import matplotlib.pyplot as plt

    model = vaezoo.from_pretrained("vae-mlp.fmnist")
    pairs = [(0, 1), (2, 3), (4, 8), (9, 12)]
    paths, end_errors = [], []
    for i, j in pairs:
        path = apps.interpolate(model, test.x[i], test.x[j], steps=10, method="slerp")
        end_errors += [float((path[0] - test.x[i]).pow(2).mean()), float((path[-1] - test.x[j]).pow(2).mean())]
        paths.append(path)
    print(f"interpolation: ends vs the originals, mean squared error {np.mean(end_errors):.4f} "
          f"(the pairs differ by {np.mean([float((test.x[i] - test.x[j]).pow(2).mean()) for i, j in pairs]):.4f})")
    # Latent arithmetic: shirts plus the "Coat" attribute vector.
    coat = apps.attribute_vector(model, train.x[:10000], train.y[:10000], 4)
    shirts = test.x[test.y == 6][:10]
    moved = [apps.add_attribute(model, shirts, coat, scale=s) for s in (0.0, 1.0, 2.0)]
    figure, axes = plt.subplots(1, 2, figsize=(12, 3.6), gridspec_kw={"width_ratios": [10, 10]})
    show(axes[0], torch.cat(paths), 10, "vaezoo interpolate vae-mlp.fmnist --method slerp")
    show(axes[1], torch.cat([shirts, *moved]), 10, 'shirts; + 0, 1, 2 x the "Coat" vector (apps.add_attribute)')
    save_figure(figure, out / "interpolation.png")


def with_defects(x: torch.Tensor, size: int = 6, seed: int = 0) -> torch.Tensor:
    """Each image with one size x size square inverted at a random place: a simulated defect."""
    generator = torch.Generator().manual_seed(seed)
    x = x.clone()
    for image in x:
        row, column = torch.randint(0, x.shape[-1] - size, (2,), generator=generator).tolist()
        image[:, row:row + size, column:column + size] = 1 - image[:, row:row + size, column:column + size]
    return x


def anomaly(out: Path, test, val) -> None:
    import matplotlib.pyplot as plt
    from sklearn.datasets import load_digits

    model = vaezoo.from_pretrained("vae-mlp.fmnist")
    clean, defective = test.x[1000:2000], with_defects(test.x[:1000])
    digits = torch.tensor(load_digits().images[:1000], dtype=torch.float32).unsqueeze(1) / 16
    digits = torch.nn.functional.interpolate(digits, size=(28, 28), mode="bilinear").clamp(0, 1)
    reference = val.x[:2000]
    figure, axes = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    clean_scores = apps.anomaly_scores(model, clean).numpy()
    for name, others in (("6x6 inverted patch", defective), ("8x8 digits, upscaled", digits)):
        x = torch.cat([clean, others])
        report = apps.detect_anomalies(model, x, reference, is_anomaly=torch.arange(len(x)) >= len(clean))
        print(f"anomaly, Fashion-MNIST test vs {name}: {report.summary()}")
        axes[0].hist(report.scores[len(clean):].numpy(), bins=60, alpha=0.6, label=f"{name} (AUROC {report.auroc:.2f})")
    axes[0].hist(clean_scores, bins=60, alpha=0.6, label="Fashion-MNIST test")
    axes[0].axvline(report.threshold, color="k", linestyle="--", label="threshold: 95% of validation")
    axes[0].set_xlabel("-ELBO (nats) under vae-mlp.fmnist")
    axes[0].legend(fontsize=8)
    axes[0].set_title("vaezoo anomaly vae-mlp.fmnist", fontsize=9)
    scores = apps.anomaly_scores(model, defective[:40]).numpy()
    show(axes[1], defective[:40][np.argsort(-scores)][:24], 6, "defective images, most anomalous first")
    save_figure(figure, out / "anomaly.png")


def imputation(out: Path, test, train) -> None:
    import matplotlib.pyplot as plt

    x, hidden = test.x[:256], apps.bottom_half_mask((1, 28, 28))
    mask = hidden.expand_as(x)
    mean_fill = float((train.x.mean(0, keepdim=True).expand_as(x) - x)[mask].pow(2).mean())
    rows = [x[:10], torch.where(hidden, torch.full_like(x[:10], 0.5), x[:10])]
    for tag in ("vae-mlp.fmnist", "hvae.fmnist"):
        model = vaezoo.from_pretrained(tag)
        for method in ("importance", "iterate"):
            filled = apps.impute(model, x, hidden, method=method, seed=0)  # from the model's own mean
            print(f"imputation {tag} {method}, bottom half of 256 test images: MSE "
                  f"{float((filled - x)[mask].pow(2).mean()):.4f} ({mean_fill:.4f} filling with the training mean)")
            if method == "importance":
                rows.append(filled[:10])
    figure, axis = plt.subplots(figsize=(8, 3.8))
    show(axis, torch.cat(rows), 10, "vaezoo impute: original; bottom half hidden; vae-mlp.fmnist; hvae.fmnist")
    save_figure(figure, out / "imputation.png")


def transfer(out: Path, test) -> None:
    import matplotlib.pyplot as plt

    cvae, classifier = vaezoo.from_pretrained("cvae.fmnist"), load_classifier("fashion-mnist")
    x, y = test.x[:1000], test.y[:1000]
    accuracies = []
    for target in range(10):
        others = y != target
        with torch.no_grad():
            moved = apps.transfer(cvae, x[others][:100], y[others][:100], target)
            accuracies.append(float((classifier(moved).argmax(1) == target).float().mean()))
    print("transfer: the classifier reads " + ", ".join(f"{n} {a:.2f}" for n, a in zip(SHORT_NAMES, accuracies))
          + f" (mean {np.mean(accuracies):.3f})")
    examples = x[:8]
    columns = [examples] + [apps.transfer(cvae, examples, y[:8], target) for target in range(10)]
    grid = torch.stack(columns, dim=1).flatten(0, 1)  # (8 * 11, 1, 28, 28): one row per example
    figure, axis = plt.subplots(figsize=(8, 6.2))
    show(axis, grid, 11, "vaezoo transfer cvae.fmnist --to-label L: original, then as each class")
    axis.set_title("vaezoo transfer cvae.fmnist --to-label L\noriginal | " + " | ".join(SHORT_NAMES), fontsize=8)
    save_figure(figure, out / "transfer.png")


def explore(out: Path, test) -> None:
    import matplotlib.pyplot as plt

    model = vaezoo.from_pretrained("vae-mlp.fmnist")
    points = apps.latent_map(model, test.x[:2000], method="tsne")
    figure, axis = plt.subplots(figsize=(6.5, 5))
    scatter = axis.scatter(points[:, 0], points[:, 1], c=test.y[:2000].numpy(), cmap="tab10", s=4, vmin=-0.5, vmax=9.5)
    colorbar = figure.colorbar(scatter, ax=axis, ticks=range(10))
    colorbar.ax.set_yticklabels(FASHION_MNIST_CLASSES, fontsize=7)
    axis.set_title("vaezoo explore vae-mlp.fmnist --method tsne (2000 test images)", fontsize=9)
    axis.set_xticks([])
    axis.set_yticks([])
    save_figure(figure, out / "explore.png")
    beta = vaezoo.from_pretrained("beta-vae.fmnist")
    traversal = apps.traverse(beta, test.x[:2000], rows=8, steps=9)
    print(f"traversal (beta-vae.fmnist): dims {traversal.dims}, spread {[round(float(s), 2) for s in traversal.spread]}")
    figure, axis = plt.subplots(figsize=(5.5, 5.2))
    show(axis, traversal.images, 9, "vaezoo explore beta-vae.fmnist --traverse: one row per latent dim")
    save_figure(figure, out / "traversal.png")


def augmentation(out: Path, train, test) -> None:
    import matplotlib.pyplot as plt
    from sklearn.linear_model import LogisticRegression

    cvae = vaezoo.from_pretrained("cvae.fmnist")
    test_x, test_y, train_y = test.x[:2000].flatten(1).numpy(), test.y[:2000].numpy(), train.y.numpy()
    scores = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        index = np.concatenate([rng.choice(np.flatnonzero(train_y == c), 10, replace=False) for c in range(10)])
        x, y = train.x[index].flatten(1).numpy(), train_y[index]
        synthetic_x, synthetic_y = apps.augment(cvae, 50, per_class=True, seed=seed)
        plain = LogisticRegression(max_iter=500).fit(x, y).score(test_x, test_y)
        augmented = LogisticRegression(max_iter=500).fit(
            np.concatenate([x, synthetic_x.flatten(1).numpy()]), np.concatenate([y, synthetic_y.numpy()])
        ).score(test_x, test_y)
        scores.append((plain, augmented))
    plain, augmented = np.mean(scores, axis=0)
    print(f"augmentation: logistic regression on 10 real images per class, test accuracy {plain:.3f}; with 50 cvae "
          f"samples per class added {augmented:.3f} (3 draws; 2000 test images)")
    samples, _ = apps.augment(cvae, 6, per_class=True, seed=0)
    grid = samples.view(10, 6, 1, 28, 28).transpose(0, 1).flatten(0, 1)  # a column per class
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [3, 1.2]})
    show(axes[0], grid, 10, "vaezoo augment cvae.fmnist --n 6 --per-class: " + ", ".join(SHORT_NAMES))
    axes[1].bar(["10 real\nper class", "+ 50 cvae\nper class"], [plain, augmented], color=["grey", "tab:blue"])
    axes[1].set_ylim(0, 1)
    axes[1].set_ylabel("test accuracy (logistic regression)")
    for position, value in enumerate((plain, augmented)):
        axes[1].text(position, value + 0.02, f"{value:.3f}", ha="center")
    save_figure(figure, out / "augmentation.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent.parent / "docs" / "gallery"))
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    print_header("vaezoo application gallery (pretrained .fmnist tags)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    splits = load_data("fashion-mnist", seed=0)
    start = time.perf_counter()
    generation(out)
    reconstruction(out, splits.test)
    interpolation(out, splits.test, splits.train)
    anomaly(out, splits.test, splits.val)
    imputation(out, splits.test, splits.train)
    transfer(out, splits.test)
    explore(out, splits.test)
    augmentation(out, splits.train, splits.test)
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
