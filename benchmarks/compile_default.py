"""Does ``torch.compile`` pay? Per variant: the trainer's step eager and compiled, the compile cost, the break-even.

    python benchmarks/compile_default.py                          # every variant, Fashion-MNIST, 1 thread
    python benchmarks/compile_default.py --models vae-mlp hvae --threads 2
    python benchmarks/compile_default.py --data digits --steps 10 --models vae-mlp   # a quick look (the tests)

For each variant (its default config at the data's shape) the shared trainer runs three short epochs of
``--steps`` steps at its default batch size, once with ``compile=False`` and once with ``compile=True``,
from the same seed and data. The steady step time is the faster of epochs 2 and 3; the compile cost is
epoch 1's time minus a steady epoch (tracing, compiling, and the first steps' warm-up), with Inductor's on-disk
caches empty, as on a first run. The break-even
is the number of steps after which the compiled run has caught up:

    break_even = compile_cost / (eager_step - compiled_step)      (never, when compiling does not speed a step)

and it is set against the steps of a default run on the data (the variant's default epochs x full batches of
the training split). ``vaezoo train --help`` quotes this script's verdict for ``--compile``; the default
(``compile=False``) stands while no variant's break-even falls inside its default run.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

# A cold cache, so that the compile cost is what a first run pays: Inductor keeps compiled graphs and kernels on disk
# (a second measurement measured 0.7-2 s where the first paid 10-230 s).
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="vaezoo-compile-default-")
from dataclasses import dataclass, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import print_header  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo.data import DataSplits, load_data  # noqa: E402
from vaezoo.training.trainer import Trainer, resolve_train_config  # noqa: E402


@dataclass
class CompileVerdict:
    """One variant's measured eager and compiled step, compile cost and break-even against a default run."""

    model: str
    eager_ms: float
    compiled_ms: float
    compile_s: float
    default_steps: int  # steps of a default run on the data

    @property
    def speedup(self) -> float:
        return self.eager_ms / self.compiled_ms

    @property
    def break_even_steps(self) -> float:
        saved_ms = self.eager_ms - self.compiled_ms
        return math.inf if saved_ms <= 0 else max(0.0, self.compile_s) * 1000 / saved_ms

    @property
    def pays(self) -> bool:
        return self.break_even_steps < self.default_steps


def short_splits(splits: DataSplits, examples: int) -> DataSplits:
    """The first ``examples`` training rows and a small validation split: three epochs stay short."""
    return replace(splits, train=splits.train[:examples], val=splits.val[:256], test=splits.test[:256])


def steady_and_first_epoch(name: str, splits: DataSplits, steps: int, compile: bool) -> tuple[float, float, int]:
    """(steady seconds per step, epoch 1 seconds minus a steady epoch) of three epochs of the trainer, and the
    variant's number of training stages."""
    torch.manual_seed(0)
    model = vaezoo.create_model(name, input_shape=splits.input_shape, num_classes=splits.num_classes)
    defaults = resolve_train_config(model, progress=False)
    config = replace(defaults, epochs=3, stage_epochs=(), compile=compile, progress=False, seed=0, ema_decay=0.0)
    data = short_splits(splits, steps * config.batch_size)
    main_stage = model.stages()[0].name
    history = [r for r in Trainer(model, data, config).fit().history if r["stage"] == main_stage]
    epoch_seconds = [r["train_time_s"] for r in history]
    steady = min(epoch_seconds[1:])
    return steady / steps, epoch_seconds[0] - steady, len(model.stages())


def measure_variant(name: str, splits: DataSplits, steps: int) -> CompileVerdict:
    torch._dynamo.reset()  # nothing compiled for an earlier variant is reused
    torch._inductor.config.fx_graph_cache = False  # nor a graph another variant with the same networks compiled
    eager_step, eager_first, stages = steady_and_first_epoch(name, splits, steps, compile=False)
    compiled_step, compiled_first, _ = steady_and_first_epoch(name, splits, steps, compile=True)
    defaults = resolve_train_config(vaezoo.get_model_class(name), progress=False)
    default_steps = defaults.epochs * (splits.train.x.shape[0] // defaults.batch_size) * stages
    # the eager first epoch's extra time (warm-up) is not compile's to pay
    return CompileVerdict(name, 1000 * eager_step, 1000 * compiled_step, compiled_first - max(0.0, eager_first),
                          default_steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--models", nargs="*", help="variants to measure (default: every registered one)")
    parser.add_argument("--steps", type=int, default=40, help="training steps per epoch of each measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error(f"--steps {args.steps} is too few to time a step; give 2 or more (default 40)")
    torch.set_num_threads(args.threads)
    print_header(f"torch.compile: does it pay per variant? ({args.data})")
    splits = load_data(args.data)
    names = args.models or vaezoo.list_models(loadable=True)
    print(f"{'model':<14} {'eager ms':>9} {'compiled ms':>11} {'speedup':>8} {'compile s':>9} "
          f"{'break-even':>10} {'default run':>11}  pays")
    verdicts = []
    for name in names:
        start = time.perf_counter()
        try:
            verdict = measure_variant(name, splits, args.steps)
        except (vaezoo.VAEZooError, RuntimeError) as error:  # a variant that cannot take this data, or fails to compile
            print(f"{name:<14} skipped: {' '.join(str(error).split())[:150]}", flush=True)
            continue
        verdicts.append(verdict)
        even = "never" if math.isinf(verdict.break_even_steps) else f"{verdict.break_even_steps:,.0f}"
        print(f"{name:<14} {verdict.eager_ms:9.2f} {verdict.compiled_ms:11.2f} {verdict.speedup:7.2f}x "
              f"{verdict.compile_s:9.1f} {even:>10} {verdict.default_steps:>11,}  {'yes' if verdict.pays else 'no'}"
              f"   ({time.perf_counter() - start:.0f} s)", flush=True)
    paying = [v.model for v in verdicts if v.pays]
    print(f"\ncompile pays within a default run on {args.data}: {', '.join(paying) if paying else 'none of them'}")


if __name__ == "__main__":
    main()
