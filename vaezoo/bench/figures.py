"""Each benchmarked model's figures: loss curve, samples, reconstructions, a PCA map of its posterior means, and a
latent traversal labelled by the factor each dim captures where the data has known factors."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vaezoo.apps import posterior_means, traverse
from vaezoo.bench.measure import eval_inputs
from vaezoo.core.model import VAE
from vaezoo.errors import CapabilityError
from vaezoo.eval.figures import class_labels, save_sample_grid
from vaezoo.io.figures import interleave_rows, paired_row_labels, save_image_grid, save_loss_curve, save_scatter


def save_model_figures(name: str, model: VAE, splits: Any, history: list[dict[str, Any]], out: Path) -> None:
    """Write ``out/name/``: loss_curve.png (if trained here), samples.png and reconstructions.png (images), latents_pca.png,
    and traversal.png for data with factors (shapes2d) and a Gaussian posterior."""
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
    if splits.test.factors is not None and len(splits.input_shape) == 3 and splits.input_shape[0] in (1, 3):
        save_factor_traversal(name, model, splits, folder / "traversal.png")


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


def save_factor_traversal(name: str, model: VAE, splits: Any, path: Path, examples: int = 2000) -> None:
    """beta-VAE's traversal figure (Higgins et al. 2017), each row labelled by the factor its latent dim shares the
    most information with (MIG's normalised I(z_j; v_k)), over the first ``examples`` test images; skipped for a
    non-Gaussian posterior (discrete codes have no mean to move along)."""
    x, y = eval_inputs(model, splits.test, 0)
    x, y = x[:examples], None if y is None else y[:examples]
    try:
        grid = traverse(model, x, y, rows=10, steps=9, factors=splits.test.factors[:examples],
                        factor_names=splits.factor_names)
    except CapabilityError:
        return
    save_image_grid(grid.images, path, nrow=9, row_labels=grid.row_labels(), col_labels=grid.column_labels(),
                    title=f"{name}: traversal of test example 0 on {splits.name}; rows labelled by the factor "
                          "each dim captures (I(z; v) / H(v))")
