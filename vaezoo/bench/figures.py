"""Each benchmarked model's figures: loss curve, samples, reconstructions and a PCA map of its posterior means."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vaezoo.apps import posterior_means
from vaezoo.bench.measure import eval_inputs
from vaezoo.core.model import VAE
from vaezoo.eval.figures import class_labels, save_sample_grid
from vaezoo.io.figures import interleave_rows, paired_row_labels, save_image_grid, save_loss_curve, save_scatter


def save_model_figures(name: str, model: VAE, splits: Any, history: list[dict[str, Any]], out: Path) -> None:
    """Write ``out/name/``: loss_curve.png (if trained here), samples.png and reconstructions.png (images), latents_pca.png."""
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    if history:
        save_loss_curve(history, folder / "loss_curve.png")
    if len(splits.input_shape) == 3 and splits.input_shape[0] in (1, 3):
        save_sample_grid(model, folder / "samples.png", n=64, class_names=splits.class_names)
        originals = splits.test.x[:32]
        y = splits.test.y[:32].to(model.device) if model.capabilities.conditional else None
        recons = model.reconstruct(originals.to(model.device), y).cpu()
        save_image_grid(interleave_rows(originals, recons, 8), folder / "reconstructions.png", nrow=8,
                        title=f"{name}: {len(originals)} test examples of {splits.name} and their reconstructions",
                        row_labels=paired_row_labels(len(originals), 8, "original", "reconstructed"))
    save_latent_map(name, model, splits, folder / "latents_pca.png")


def save_latent_map(name: str, model: VAE, splits: Any, path: Path) -> None:
    """A scatter of the first two principal components of the test posterior means, coloured and named by class."""
    from sklearn.decomposition import PCA  # scikit-learn is heavy; only the figures need it

    means, _ = posterior_means(model, *eval_inputs(model, splits.test, 0))
    if means.shape[1] < 2:
        return
    points = PCA(n_components=2).fit_transform(means.numpy())
    labels = splits.test.y.numpy() if splits.test.y is not None else None
    save_scatter(points, labels, path, f"{name}: PCA of the latent means of {len(points)} test examples of {splits.name}",
                 class_names=class_labels(splits.num_classes, splits.class_names), axis_labels=("PC 1", "PC 2"))
