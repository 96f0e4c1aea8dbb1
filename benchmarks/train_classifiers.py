"""Train the small CNNs whose features the benchmark's Frechet distance uses, and ship them.

    python benchmarks/train_classifiers.py                      # digits and fashion-mnist
    python benchmarks/train_classifiers.py --data digits --epochs 40

Writes ``vaezoo/eval/classifiers/<dataset>.safetensors`` and ``<dataset>.json`` (config, test accuracy,
the command, machine and versions). One torch thread, so it runs beside other jobs.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time

import torch
from torch import nn

from vaezoo.data import load_data
from vaezoo.eval.classifier import SmallCNN, save_classifier

DEFAULT_EPOCHS = {"digits": 40, "fashion-mnist": 10}
DEFAULT_SHAPES = {"digits": ((16, 32, 64), 128), "fashion-mnist": ((16, 32, 64), 128)}  # (conv widths, features)


@torch.no_grad()
def accuracy(model: SmallCNN, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = sum(int((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum()) for i in range(0, len(x), 1000))
    return correct / len(x)


def train_one(dataset: str, epochs: int, seed: int = 0, channels: tuple[int, ...] = (16, 32, 64), hidden: int = 128,
              out_dir: str | None = None) -> dict:
    torch.manual_seed(seed)
    splits = load_data(dataset, seed=seed)
    x, y = splits.train.x, splits.train.y
    model = SmallCNN(splits.input_shape, splits.num_classes, channels, hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = 64 if len(x) < 5000 else 128
    steps = epochs * ((len(x) + batch - 1) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x))
        for i in range(0, len(x), batch):
            index = order[i:i + batch]
            loss = loss_fn(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        print(f"{dataset} epoch {epoch + 1}/{epochs}: loss {float(loss.detach()):.3f}, val acc "
              f"{accuracy(model, splits.val.x, splits.val.y):.4f}", flush=True)
    metadata = {
        "test_accuracy": accuracy(model, splits.test.x, splits.test.y),
        "val_accuracy": accuracy(model, splits.val.x, splits.val.y),
        "epochs": epochs, "seed": seed, "train_seconds": round(time.perf_counter() - start, 1),
        "command": "python " + " ".join(sys.argv), "machine": platform.platform(),
        "torch": torch.__version__, "python": platform.python_version(),
    }
    path = save_classifier(model, dataset, metadata, out_dir)
    print(f"{dataset}: test accuracy {metadata['test_accuracy']:.4f} -> {path}", flush=True)
    return metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="*", default=list(DEFAULT_EPOCHS), help="datasets to train on")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: per dataset)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--channels", type=int, nargs="+", default=None, help="conv widths (default: per dataset)")
    parser.add_argument("--hidden", type=int, default=None, help="feature width (default: per dataset)")
    parser.add_argument("--out-dir", default=None, help="where to write (default: vaezoo/eval/classifiers, what ships)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for dataset in args.data:
        channels, hidden = DEFAULT_SHAPES.get(dataset, ((16, 32, 64), 128))
        train_one(dataset, args.epochs or DEFAULT_EPOCHS.get(dataset, 5), args.seed, tuple(args.channels or channels),
                  args.hidden or hidden, args.out_dir)


if __name__ == "__main__":
    main()
