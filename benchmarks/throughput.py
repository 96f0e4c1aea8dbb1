"""Training speed: the seed's plain loop against vaezoo's trainer, side by side in one process.

    python benchmarks/throughput.py                 # Fashion-MNIST, as the README quotes
    python benchmarks/throughput.py --rounds 1 --seed-epochs 2 --data digits   # a quick look

Prints (1) samples/s of the seed's loop (../shared/seed/vae-tutorial.txt, sections 4a-4c: MLP 784-256-10,
BCE, Adam 1e-3, batch 128, a DataLoader) and of vaezoo's trainer with the same architecture and batch size,
measured in alternating epochs, and their ratio; (2) the wall time vaezoo's default vae-mlp settings need to
reach the test -ELBO the seed reaches after its epochs, as a fraction of the seed's time; (3) the GFLOP/s of
vaezoo's training step as a fraction of this machine's fp32 matmul peak, measured here too.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).parent))
from common import print_header  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo.data import DataSplits, load_data  # noqa: E402
from vaezoo.training import TrainConfig, Trainer  # noqa: E402


# --- the seed's code, as the tutorial writes it (sections 4a-4c) -----------------------------------
class SeedEncoder(nn.Module):
    def __init__(self, input_dim, latent_dim):
        super().__init__()
        self.fc1 = nn.Linear(input_dim, 256)
        self.fc2_mean = nn.Linear(256, latent_dim)
        self.fc2_logvar = nn.Linear(256, latent_dim)

    def forward(self, x):
        h = F.relu(self.fc1(x))
        return self.fc2_mean(h), self.fc2_logvar(h)


class SeedDecoder(nn.Module):
    def __init__(self, latent_dim, output_dim):
        super().__init__()
        self.fc1 = nn.Linear(latent_dim, 256)
        self.fc2 = nn.Linear(256, output_dim)

    def forward(self, z):
        return torch.sigmoid(self.fc2(F.relu(self.fc1(z))))


class SeedVAE(nn.Module):
    def __init__(self, input_dim, latent_dim):
        super().__init__()
        self.encoder = SeedEncoder(input_dim, latent_dim)
        self.decoder = SeedDecoder(latent_dim, input_dim)

    def reparameterize(self, mean, logvar):
        return mean + torch.randn_like(logvar) * torch.exp(0.5 * logvar)

    def forward(self, x):
        mean, logvar = self.encoder(x)
        return self.decoder(self.reparameterize(mean, logvar)), mean, logvar


def seed_loss(x, x_recon, mean, logvar):
    recon_loss = F.binary_cross_entropy(x_recon, x, reduction="sum")
    kl_loss = -0.5 * torch.sum(1 + logvar - mean.pow(2) - logvar.exp())
    return recon_loss + kl_loss


def seed_epoch(vae, optimizer, dataloader) -> float:
    """One epoch of the seed's loop; returns its wall time."""
    start = time.perf_counter()
    vae.train()
    train_loss = 0
    for x, _ in dataloader:
        x = x.view(x.size(0), -1)
        optimizer.zero_grad()
        x_recon, mean, logvar = vae(x)
        loss = seed_loss(x, x_recon, mean, logvar)
        loss.backward()
        optimizer.step()
        train_loss += loss.item()
    return time.perf_counter() - start


@torch.no_grad()
def seed_test_neg_elbo(vae, x: torch.Tensor) -> float:
    vae.eval()
    flat = x.view(x.size(0), -1)
    total = 0.0
    for batch in flat.split(1000):
        x_recon, mean, logvar = vae(batch)
        total += seed_loss(batch, x_recon, mean, logvar).item()
    return total / flat.shape[0]


# --- measurements ------------------------------------------------------------------------------------
def matmul_peak_gflops(size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def training_step_flops(model: vaezoo.VAE, batch: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        model(batch).loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def vaezoo_epoch(model: vaezoo.VAE, splits: DataSplits, config: TrainConfig) -> float:
    """One epoch of vaezoo's trainer; returns its training samples/s (validation excluded)."""
    result = Trainer(model, splits, config).fit()
    return result.history[-1]["samples_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--rounds", type=int, default=3, help="alternating epochs of each loop for the speed ratio")
    parser.add_argument("--seed-epochs", type=int, default=10, help="epochs of the seed's loop for the quality target")
    args = parser.parse_args()
    print_header("vaezoo training throughput vs the seed's loop")
    splits = load_data(args.data)
    input_dim = int(torch.tensor(splits.input_shape).prod())
    test_only = DataSplits(splits.train, splits.test, splits.test, splits.name, splits.input_shape,
                           splits.num_classes, splits.class_names, splits.source)

    # (1) the seed's settings in both loops, alternating epochs
    torch.manual_seed(0)
    seed_vae = SeedVAE(input_dim, 10)
    seed_optimizer = torch.optim.Adam(seed_vae.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(splits.train.x, splits.train.y), batch_size=128, shuffle=True)
    torch.manual_seed(0)
    ours = vaezoo.create_model("vae-mlp", preset="seed", input_shape=splits.input_shape)
    same_settings = TrainConfig(epochs=1, batch_size=128, lr=1e-3, lr_schedule="constant", progress=False)
    seed_rates, our_rates = [], []
    for _ in range(args.rounds):
        seed_rates.append(len(loader.dataset) / seed_epoch(seed_vae, seed_optimizer, loader))
        our_rates.append(vaezoo_epoch(ours, splits, same_settings))
    seed_rate, our_rate = statistics.median(seed_rates), statistics.median(our_rates)
    print("## 1. same architecture (784-256-10 MLP), BCE, Adam 1e-3, batch 128")
    print(f"seed loop (DataLoader):  {seed_rate:10.0f} samples/s   (epochs: {', '.join(f'{r:.0f}' for r in seed_rates)})")
    print(f"vaezoo trainer:          {our_rate:10.0f} samples/s   (epochs: {', '.join(f'{r:.0f}' for r in our_rates)})")
    print(f"ratio vaezoo / seed:     {our_rate / seed_rate:10.2f}x   (target >= 2.0x)")
    print()

    # (2) time to the seed's quality: seed for N epochs, then vaezoo's default vae-mlp
    torch.manual_seed(0)
    seed_vae = SeedVAE(input_dim, 10)
    seed_optimizer = torch.optim.Adam(seed_vae.parameters(), lr=1e-3)
    seed_time = sum(seed_epoch(seed_vae, seed_optimizer, loader) for _ in range(args.seed_epochs))
    target = seed_test_neg_elbo(seed_vae, splits.test.x)
    torch.manual_seed(0)
    default_model = vaezoo.create_model("vae-mlp", input_shape=splits.input_shape)
    defaults = TrainConfig(progress=False)
    history = Trainer(default_model, test_only, defaults).fit().history
    elapsed, reached = 0.0, None
    for record in history:
        elapsed += record["train_time_s"]
        if record["val"]["neg_elbo"] <= target:
            reached = (record["epoch"], elapsed, record["val"]["neg_elbo"])
            break
    print(f"## 2. time to the seed's test -ELBO after {args.seed_epochs} epochs ({target:.2f} nats)")
    print(f"seed loop: {seed_time:.1f} s for {args.seed_epochs} epochs")
    print(f"vaezoo defaults (vae-mlp {list(default_model.config.hidden_dims)}, latent {default_model.config.latent_dim}, "
          f"batch {defaults.batch_size}, lr {defaults.lr}, {defaults.lr_schedule}, {defaults.epochs} epochs):")
    if reached is None:
        print(f"  did not reach it in {len(history)} epochs (best test -ELBO {min(r['val']['neg_elbo'] for r in history):.2f})")
    else:
        epoch, seconds, value = reached
        print(f"  reached {value:.2f} nats after epoch {epoch}, {seconds:.1f} s of training")
        print(f"  time ratio vaezoo / seed: {seconds / seed_time:.3f}   (target <= 0.333)")
    print(f"  final test -ELBO after {len(history)} epochs: {history[-1]['val']['neg_elbo']:.2f} nats")
    print()

    # (3) achieved GFLOP/s of training vs the measured fp32 matmul peak
    peak = matmul_peak_gflops()
    print("## 3. arithmetic efficiency")
    print(f"fp32 matmul peak (2048^3, {torch.get_num_threads()} threads): {peak:.1f} GFLOP/s")
    for label, model, rate, batch_size in (
        ("seed settings", ours, our_rate, 128),
        ("vaezoo defaults", default_model, history[-1]["samples_per_s"], defaults.batch_size),
    ):
        flops = training_step_flops(model.train(), splits.train.x[:batch_size])
        achieved = flops / batch_size * rate / 1e9
        print(f"{label:<16} {flops / batch_size / 1e6:7.2f} MFLOP/example  {achieved:7.1f} GFLOP/s  "
              f"= {100 * achieved / peak:5.1f}% of peak   (aim >= 60%)")


if __name__ == "__main__":
    main()
