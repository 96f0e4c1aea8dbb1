"""What a better network for shapes2d would cost here: one training step of each, side by side, one thread.

    python benchmarks/shapes2d_step_time.py               # batch 64, 20 timed steps each
    python benchmarks/shapes2d_step_time.py --steps 5     # quicker, noisier

Times the optimiser step (forward, backward, Adam) of beta-tcvae on 64x64 shapes2d-shaped batches with the
shipped MLP, with vaezoo's conv nets and with a conv encoder before the MLP decoder, then of decoders alone:
the MLP decoder against a spatial broadcast decoder (Watters et al. 2019, arXiv:1901.07017: z tiled over the
image with x, y coordinate channels, then stride-1 convolutions), the decoder made for position factors. Each
figure is quoted as a ratio to the first row of its table, which ran in the same process a moment before.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).parent))
from common import positive_int, print_header  # noqa: E402

import vaezoo  # noqa: E402

SIDE = 64
LATENTS = 10
MODELS = {  # beta-tcvae.shapes2d's config, with these networks
    "MLP 4096-64-10 (shipped)": {"encoder": "mlp", "decoder": "mlp", "hidden_dims": (64,)},
    "conv, 16 channels x 4 stages": {"encoder": "conv", "decoder": "conv", "hidden_dims": (64,),
                                     "conv_channels": (16, 16, 16, 16)},
    "conv, 32 channels x 4 stages": {"encoder": "conv", "decoder": "conv", "hidden_dims": (64,),
                                     "conv_channels": (32, 32, 32, 32)},
    "conv encoder 16 ch x 4, MLP decoder": {"encoder": "conv", "decoder": "mlp", "hidden_dims": (64,),
                                            "conv_channels": (16, 16, 16, 16)},
}


class SpatialBroadcastDecoder(nn.Module):
    """z (B, D) -> logits (B, 1, 64, 64): z tiled over the grid beside x, y in [-1, 1], then ``layers``
    stride-1 convolutions of ``channels`` and a 1x1 convolution to one channel (Watters et al. 2019, fig. 1)."""

    def __init__(self, latents: int, channels: int, layers: int, kernel: int) -> None:
        super().__init__()
        coords = torch.linspace(-1, 1, SIDE)
        ys, xs = torch.meshgrid(coords, coords, indexing="ij")
        self.register_buffer("grid", torch.stack([xs, ys])[None])  # (1, 2, H, W)
        blocks: list[nn.Module] = []
        width = latents + 2
        for _ in range(layers):
            blocks += [nn.Conv2d(width, channels, kernel, padding=kernel // 2), nn.SiLU()]
            width = channels
        self.net = nn.Sequential(*blocks, nn.Conv2d(width, 1, 1))

    def forward(self, z: Tensor) -> Tensor:
        tiled = z[:, :, None, None].expand(-1, -1, SIDE, SIDE)
        return self.net(torch.cat([tiled, self.grid.expand(len(z), -1, -1, -1)], dim=1))


class MLPDecoder(nn.Module):
    """The shipped decoder alone: 10-64-4096."""

    def __init__(self, latents: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latents, 64), nn.SiLU(), nn.Linear(64, SIDE * SIDE))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(-1, 1, SIDE, SIDE)


DECODERS: dict[str, Callable[[], nn.Module]] = {
    "MLP decoder 10-64-4096 (shipped)": lambda: MLPDecoder(LATENTS),
    "broadcast, 2 x 3x3 conv, 16 channels": lambda: SpatialBroadcastDecoder(LATENTS, 16, 2, 3),
    "broadcast, 3 x 3x3 conv, 32 channels": lambda: SpatialBroadcastDecoder(LATENTS, 32, 3, 3),
}


def step_ms(parameters: list[nn.Parameter], loss_of_batch: Callable[[], Tensor], steps: int, warmup: int = 3) -> float:
    """Milliseconds per optimiser step (forward, backward, Adam), the mean over ``steps`` after ``warmup``."""
    if steps < 1:
        raise ValueError(f"steps={steps}: time at least one step")
    optimiser = torch.optim.Adam(parameters, lr=1e-3)
    for index in range(warmup + steps):
        if index == warmup:
            start = time.perf_counter()
        optimiser.zero_grad()
        loss_of_batch().backward()
        optimiser.step()
    return (time.perf_counter() - start) / steps * 1000


def time_models(batch: Tensor, steps: int) -> dict[str, float]:
    times = {}
    for name, networks in MODELS.items():
        model = vaezoo.create_model("beta-tcvae", input_shape=(1, SIDE, SIDE), latent_dim=LATENTS,
                                    dataset_size=56000, **networks)
        times[name] = step_ms(list(model.parameters()), lambda: model(batch).loss, steps)
    return times


def time_decoders(batch: Tensor, steps: int) -> dict[str, float]:
    z = torch.randn(len(batch), LATENTS)
    times = {}
    for name, build in DECODERS.items():
        decoder = build()
        times[name] = step_ms(list(decoder.parameters()),
                              lambda: nn.functional.binary_cross_entropy_with_logits(decoder(z), batch), steps)
    return times


def print_table(title: str, times: dict[str, float]) -> None:
    reference = next(iter(times.values()))
    print(f"\n{title:<40} {'ms/step':>9} {'x first':>8}")
    for name, ms in times.items():
        print(f"{name:<40} {ms:9.1f} {ms / reference:8.1f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--steps", type=positive_int, default=20, help="timed steps per network (after 3 untimed)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as the zoo's tags train: one thread per job
    torch.manual_seed(0)
    print_header("shapes2d step time")
    batch = (torch.rand(args.batch_size, 1, SIDE, SIDE) < 0.1).float()  # binary like shapes2d; values do not matter
    print_table(f"beta-tcvae step, batch {args.batch_size}", time_models(batch, args.steps))
    print_table(f"decoder step, batch {args.batch_size}", time_decoders(batch, args.steps))


if __name__ == "__main__":
    main()
