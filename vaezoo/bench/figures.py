"""Each benchmarked model's figures: loss curve, samples, reconstructions and a PCA map of its posterior means."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vaezoo.apps import posterior_means
from vaezoo.bench.measure import eval_inputs
from vaezoo.core.model import VAE
from vaezoo.eval.figures import save_sample_grid
from vaezoo.io.atomic import atomic_write
from vaezoo.io.figures import interleave_rows, save_image_grid, save_loss_curve


def save_model_figures(name: str, model: VAE, splits: Any, history: list[dict[str, Any]], out: Path) -> None:
    """Write ``out/name/``: loss_curve.png (if trained here), samples.png and reconstructions.png (images), latents_pca.png."""
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    if history:
        save_loss_curve(history, folder / "loss_curve.png")
    if len(splits.input_shape) == 3 and splits.input_shape[0] in (1, 3):
        save_sample_grid(model, folder / "samples.png", n=64)
        originals = splits.test.x[:32]
        y = splits.test.y[:32].to(model.device) if model.capabilities.conditional else None
        recons = model.reconstruct(originals.to(model.device), y).cpu()
        save_image_grid(interleave_rows(originals, recons, 8), folder / "reconstructions.png", nrow=8)  # originals above
    save_latent_map(model, splits, folder / "latents_pca.png")


def save_latent_map(model: VAE, splits: Any, path: Path) -> None:
    """A scatter of the first two principal components of the test posterior means, coloured by class."""
    import matplotlib  # matplotlib and scikit-learn are heavy; only the figures need them

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    means, _ = posterior_means(model, *eval_inputs(model, splits.test, 0))
    if means.shape[1] < 2:
        return
    points = PCA(n_components=2).fit_transform(means.numpy())
    figure, axis = plt.subplots(figsize=(5, 4.5))
    colours = splits.test.y.numpy() if splits.test.y is not None else None
    scatter = axis.scatter(points[:, 0], points[:, 1], c=colours, cmap="tab10", s=6)
    if colours is not None:
        figure.colorbar(scatter, ax=axis, label="class")
    axis.set_title(f"{model.model_name}: PCA of test posterior means")
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=100, format="png"))  # a kill or full disk leaves no torn PNG
    plt.close(figure)
