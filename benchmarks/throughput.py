"""Training speed: the seed's plain loop against vaezoo's trainer, side by side in one process.

    python benchmarks/throughput.py                 # Fashion-MNIST, as the README quotes
    python benchmarks/throughput.py --rounds 1 --seed-epochs 2 --data digits   # a quick look

Prints (1) samples/s of the seed's loop (../shared/seed/vae-tutorial.txt, sections 4a-4c: MLP 784-256-10,
BCE, Adam 1e-3, batch 128, a DataLoader) and of vaezoo's trainer with the same architecture and batch size,
measured in alternating epochs, and their ratio; (2) the wall time vaezoo's default vae-mlp settings need to
reach the test -ELBO the seed reaches after its epochs, as a fraction of the seed's time; (3) the GFLOP/s of
vaezoo's training step as a fraction of this machine's fp32 matmul peak, measured here too, and its step at the
seed's settings against the same step's matrix multiplies alone; (4) a profile of that step by op: the why of (3).

The tutorial leaves its ``dataloader`` to the reader; the seed runs with two, and both are reported:
``torchvision`` (torchvision's FashionMNIST dataset with ``transforms.ToTensor()``, what tutorials
pair with this loop) and ``tensors`` (a TensorDataset of the pre-scaled images: the kindest DataLoader).
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).parent))
from common import print_header  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo.data import DataSplits, load_data  # noqa: E402
from vaezoo.training.trainer import TrainConfig, Trainer, resolve_train_config  # noqa: E402


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


def linear_shapes(model: nn.Module, batch: torch.Tensor) -> list[tuple[int, int, int, bool]]:
    """(rows, in, out, input needs a gradient) of every nn.Linear call in one training step of ``model``."""
    shapes: list[tuple[int, int, int, bool]] = []

    def record(module: nn.Linear, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        x = inputs[0]
        shapes.append((x.numel() // x.shape[-1], module.in_features, module.out_features, x.requires_grad))

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        model(batch).loss.backward()
    finally:
        for hook in hooks:
            hook.remove()
        model.zero_grad(set_to_none=True)
    return shapes


def matmul_ceiling_seconds(shapes: list[tuple[int, int, int, bool]], repeats: int = 200, rounds: int = 5) -> float:
    """Seconds per step of the step's matrix multiplies alone, at its shapes and on this many threads: per linear
    layer the forward x W^T, the weight gradient g^T x and, where the input needs one, the input gradient g W
    (what autograd runs for nn.Linear). The fastest of ``rounds`` timings of ``repeats`` steps: a ceiling."""
    operands = []
    for rows, fan_in, fan_out, input_grad in shapes:
        x, w, g = torch.randn(rows, fan_in), torch.randn(fan_out, fan_in), torch.randn(rows, fan_out)
        operands.append((x, w, g, input_grad))

    def step() -> None:
        for x, w, g, input_grad in operands:
            F.linear(x, w)
            g.t().mm(x)
            if input_grad:
                g.mm(w)

    for _ in range(10):
        step()
    best = math.inf
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            step()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm")  # the kernels; aten::linear/matmul only dispatch to them


def step_profile(model: vaezoo.VAE, splits: DataSplits, config: TrainConfig, steps: int = 60) -> dict:
    """Where vaezoo's training step spends its time: torch.profiler over an epoch of ``steps`` steps of the trainer,
    between the ends of its first and last optimizer steps (so ``steps - 1`` whole steps). Each op's self CPU time
    is summed by kind: the matrix multiplies, the optimizer's update (every op under ``Optimizer.step`` or
    ``zero_grad``), every other op by name; what lies outside any op (Python, the autograd engine, the trainer's
    bookkeeping) is the window's wall time less the ops' sum. Returns ``{"steps", "step_s", "matmul_calls",
    "parts": {name: seconds per step}}``; the parts sum to ``step_s``. The profiler's own overhead per op makes
    the step slower than unprofiled, so read the parts as shares."""
    from torch.profiler import ProfilerActivity, profile

    subset = replace(splits, train=splits.train[:config.batch_size * steps], val=splits.val[:config.batch_size])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        Trainer(model, subset, replace(config, epochs=1, progress=False)).fit()
    events = list(prof.events())
    optimizer_steps = sorted((e for e in events if e.name.startswith("Optimizer.step#")), key=lambda e: e.time_range.end)
    if len(optimizer_steps) < 2:
        raise ValueError(f"steps={steps} gave {len(optimizer_steps)} optimizer steps to profile; use steps >= 2 "
                         "with at least that many batches of training data")
    start, end = optimizer_steps[0].time_range.end, optimizer_steps[-1].time_range.end
    whole_steps = len(optimizer_steps) - 1
    parts: dict[str, float] = {}
    matmul_calls = 0
    for event in events:
        if event.time_range.start < start or event.time_range.end > end or event.name.startswith("Optimizer."):
            continue  # outside the window; an optimizer's record_function is a span, its ops are counted below
        kind = event.name
        if _under_optimizer(event):
            kind = "optimizer update"
        elif event.name in MATMUL_OPS:
            kind, matmul_calls = "matrix multiplies", matmul_calls + 1
        parts[kind] = parts.get(kind, 0.0) + event.self_cpu_time_total / 1e6 / whole_steps
    step_s = (end - start) / 1e6 / whole_steps
    parts["outside any op (Python, autograd engine)"] = step_s - sum(parts.values())
    return {"steps": whole_steps, "step_s": step_s, "matmul_calls": matmul_calls / whole_steps, "parts": parts}


def _under_optimizer(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("Optimizer."):
            return True
        parent = parent.cpu_parent
    return False


def torchvision_dataset(split_dir: Path):
    """torchvision's FashionMNIST over Debian's IDX files (decompressed where torchvision looks for them)."""
    import gzip
    import shutil

    import torchvision
    from torchvision import transforms

    raw = split_dir / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    source = Path("/usr/share/datasets/fashion-mnist")
    for packed in source.glob("*-ubyte.gz"):
        if not (raw / packed.stem).exists():
            with gzip.open(packed) as src, open(raw / packed.stem, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return torchvision.datasets.FashionMNIST(str(split_dir), train=True, download=False, transform=transforms.ToTensor())


def vaezoo_epoch(model: vaezoo.VAE, splits: DataSplits, config: TrainConfig) -> float:
    """One epoch of vaezoo's trainer; returns its training samples/s (validation excluded)."""
    result = Trainer(model, splits, config).fit()
    return result.history[-1]["samples_per_s"]


def epochs_needed_line(epoch_s: float, seed_epoch_s: float, epochs: int, seed_epochs: int) -> str:
    """Why the time ratio is what it is: its two factors, the cost of an epoch and the number of epochs, and the
    epochs of vaezoo's that the 0.333 target allows at that cost."""
    allowed = seed_epochs * seed_epoch_s / 3 / epoch_s
    return (f"why: {epochs} vaezoo epochs of {epoch_s:.2f} s against {seed_epochs} seed epochs of {seed_epoch_s:.2f} s "
            f"(ratio = {epochs / seed_epochs:.2f} x {epoch_s / seed_epoch_s:.2f}); the target allows {allowed:.1f} such epochs")


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

    # (1) the seed's settings in every loop, alternating epochs
    import tempfile

    loaders = {"tensors": DataLoader(TensorDataset(splits.train.x, splits.train.y), batch_size=128, shuffle=True)}
    if args.data == "fashion-mnist":
        loaders["torchvision"] = DataLoader(torchvision_dataset(Path(tempfile.mkdtemp())), batch_size=128, shuffle=True)
    seeds = {}
    for name in loaders:
        torch.manual_seed(0)
        vae = SeedVAE(input_dim, 10)
        seeds[name] = (vae, torch.optim.Adam(vae.parameters(), lr=1e-3))
    torch.manual_seed(0)
    ours = vaezoo.create_model("vae-mlp", preset="seed", input_shape=splits.input_shape)
    same_settings = TrainConfig(epochs=1, batch_size=128, lr=1e-3, lr_schedule="constant", progress=False)
    rates: dict[str, list[float]] = {name: [] for name in [*loaders, "vaezoo"]}
    for _ in range(args.rounds):
        for name, loader in loaders.items():
            rates[name].append(len(loader.dataset) / seed_epoch(*seeds[name], loader))
        rates["vaezoo"].append(vaezoo_epoch(ours, splits, same_settings))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print("## 1. same architecture (784-256-10 MLP), BCE, Adam 1e-3, batch 128")
    for name, label in (("torchvision", "seed loop, torchvision DataLoader"), ("tensors", "seed loop, TensorDataset DataLoader"),
                        ("vaezoo", "vaezoo trainer")):
        if name in medians:
            print(f"{label:<38} {medians[name]:8.0f} samples/s   (epochs: {', '.join(f'{r:.0f}' for r in rates[name])})")
    for name in loaders:
        print(f"ratio vaezoo / seed ({name}): {medians['vaezoo'] / medians[name]:6.2f}x   (target >= 2.0x)")
    print()

    # (2) time to the seed's quality: each seed loop for N epochs, then vaezoo's default vae-mlp
    targets = {}
    for name, loader in loaders.items():
        torch.manual_seed(0)
        vae = SeedVAE(input_dim, 10)
        optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)
        seconds = sum(seed_epoch(vae, optimizer, loader) for _ in range(args.seed_epochs))
        targets[name] = (seconds, seed_test_neg_elbo(vae, splits.test.x))
    torch.manual_seed(0)
    default_model = vaezoo.create_model("vae-mlp", input_shape=splits.input_shape)
    defaults = resolve_train_config(default_model, progress=False)
    history = Trainer(default_model, test_only, defaults).fit().history
    print(f"## 2. time to the seed's test -ELBO after {args.seed_epochs} epochs")
    print(f"vaezoo defaults: vae-mlp hidden {list(default_model.config.hidden_dims)}, latent {default_model.config.latent_dim}, "
          f"batch {defaults.batch_size}, lr {defaults.lr}, {defaults.lr_schedule} over {defaults.epochs} epochs")
    elapsed, curve = 0.0, []
    for record in history:
        elapsed += record["train_time_s"]
        curve.append((record["epoch"], elapsed, record["val"]["neg_elbo"]))
    print("vaezoo test -ELBO by epoch: " + ", ".join(f"{e}: {v:.2f} ({t:.1f} s)" for e, t, v in curve))
    for name, (seed_seconds, target) in targets.items():
        reached = next(((e, t, v) for e, t, v in curve if v <= target), None)
        print(f"seed ({name}): {target:.2f} nats after {args.seed_epochs} epochs in {seed_seconds:.1f} s")
        if reached is None:
            print(f"  vaezoo did not reach it in {len(curve)} epochs")
        else:
            epoch, seconds, value = reached
            print(f"  vaezoo reached {value:.2f} after epoch {epoch}, {seconds:.1f} s: "
                  f"time ratio {seconds / seed_seconds:.3f}   (target <= 0.333)")
            print("  " + epochs_needed_line(seconds / epoch, seed_seconds / args.seed_epochs, epoch, args.seed_epochs))
    print()

    # (3) achieved GFLOP/s of training vs the measured fp32 matmul peak
    peak = matmul_peak_gflops()
    print("## 3. arithmetic efficiency")
    print(f"fp32 matmul peak (2048^3, {torch.get_num_threads()} threads): {peak:.1f} GFLOP/s")
    for label, model, rate, batch_size in (
        ("seed settings", ours, medians["vaezoo"], 128),
        ("vaezoo defaults", default_model, statistics.median(r["samples_per_s"] for r in history), defaults.batch_size),
    ):
        flops = training_step_flops(model.train(), splits.train.x[:batch_size])
        achieved = flops / batch_size * rate / 1e9
        print(f"{label:<16} {flops / batch_size / 1e6:7.2f} MFLOP/example  {achieved:7.1f} GFLOP/s  "
              f"= {100 * achieved / peak:5.1f}% of peak   (aim >= 60%)")
    # the ceiling at the seed's settings: the same step's matrix multiplies alone, same shapes, same threads
    ceiling = matmul_ceiling_seconds(linear_shapes(ours.train(), splits.train.x[:128]))
    step_seconds = 128 / medians["vaezoo"]
    print(f"seed settings: the step's matmuls alone take {1000 * ceiling:.2f} ms; vaezoo's step {1000 * step_seconds:.2f} ms "
          f"= {100 * ceiling / step_seconds:.1f}% of that ceiling   (target >= 90%)")
    print()
    print_step_profile(step_profile(ours, splits, same_settings))


def print_step_profile(profile: dict, rows: int = 8) -> None:
    """Section (4): the profile's largest parts, the rest summed, and the share left outside the matmuls."""
    step_ms = 1000 * profile["step_s"]
    print(f"## 4. where vaezoo's step goes at the seed's settings (torch.profiler over {profile['steps']} steps, "
          f"{step_ms:.2f} ms per profiled step)")
    parts = sorted(profile["parts"].items(), key=lambda part: -part[1])
    for name, seconds in parts[:rows]:
        print(f"{name:<44} {1000 * seconds:7.3f} ms  {100 * seconds / profile['step_s']:5.1f}%")
    rest = sum(seconds for _, seconds in parts[rows:])
    print(f"{f'{len(parts) - rows} other ops':<44} {1000 * rest:7.3f} ms  {100 * rest / profile['step_s']:5.1f}%")
    matmuls = profile["parts"].get("matrix multiplies", 0.0) / profile["step_s"]
    print(f"{profile['matmul_calls']:.0f} matrix multiplies per step take {100 * matmuls:.1f}% of it; 90% of the ceiling "
          f"would leave everything else at most about 10%; here it is {100 * (1 - matmuls):.1f}%")


if __name__ == "__main__":
    main()
