"""Shared fixtures: scikit-learn's bundled 8x8 digits as tensors, and a short training loop."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vaezoo


@pytest.fixture(scope="session")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """x: (1797, 1, 8, 8) float32 in [0, 1]; y: (1797,) int64."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return x, torch.tensor(data.target, dtype=torch.long)


@pytest.fixture(scope="session")
def digits_splits():
    """vaezoo's seeded train/val/test split of the digits (load_data("digits")); tests must not modify it."""
    from vaezoo.data import load_data

    return load_data("digits", seed=0)


@pytest.fixture(scope="session")
def digits_classifier():
    """The small CNN shipped for the digits (vaezoo.eval.classifier), in eval mode."""
    from vaezoo.eval.classifier import load_classifier

    return load_classifier("digits")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _restore_registry():
    """A model registered at run time by one test must not leak into the next (e.g. into `list_models`)."""
    from vaezoo.zoo.registry import REGISTRY

    entries = None if REGISTRY._entries is None else dict(REGISTRY._entries)
    conflicts = {name: list(claims) for name, claims in REGISTRY._conflicts.items()}
    yield
    REGISTRY._entries, REGISTRY._conflicts = entries, conflicts


def fit(model: vaezoo.VAE, x: torch.Tensor, y: torch.Tensor | None, steps: int, lr: float = 3e-3,
        batch_size: int = 128) -> dict[str, list[float]]:
    """Adam over each of the model's training stages in turn; returns each stage's loss per step."""
    generator = torch.Generator().manual_seed(0)
    history: dict[str, list[float]] = {}
    model.train()
    for stage in model.stages():
        optimizer = torch.optim.Adam(list(stage.parameters()), lr=lr)
        losses = history.setdefault(stage.name, [])
        for step in range(steps):
            index = torch.randint(0, x.shape[0], (batch_size,), generator=generator)
            model.train_step = step
            loss = stage.loss(x[index], None if y is None else y[index]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    model.eval()
    return history


def mean_of(values: list[float], last: bool, n: int = 20) -> float:
    part = values[-n:] if last else values[:n]
    return sum(part) / len(part)


def pip_install_to(source: Path, target: Path) -> Path:
    """A real, non-editable `pip install` of ``source`` into its own folder (no dependencies, no network).

    The source is copied first without build/ and *.egg-info: setuptools reuses a stale build/lib, whose
    leftover modules (from before a file moved) would make a wheel look complete when it is not.
    """
    clean = target.parent / f"{source.name}-source"
    shutil.copytree(source, clean, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".git", "runs"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(clean)],
        check=True, capture_output=True, cwd=target.parent,
    )
    return target


@pytest.fixture
def one_thread():
    """One intra-op thread for the test: tiny models train several times faster on one thread than on two
    contended ones (on a busy 2-core machine OpenMP waits dominate)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
