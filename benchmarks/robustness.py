"""How vaezoo holds up under bad input and faults: runs the catalogue and counts how every case ended.

    python3 benchmarks/robustness.py                # everything: CLI cases in subprocesses, faults, random configs
    python3 benchmarks/robustness.py --trials 1 --sweep 10 --jobs 2

What it tries (the catalogue is tests/robustness_cases.py, which tests/test_robustness.py also runs):

- every CLI case as a real ``python -m vaezoo.cli`` subprocess with a time limit, and every Python
  case in this process: unknown names, tags and fields, bad --set values, bad data, bad weight files
  and model folders, broken plugins;
- faults in a child process, at points drawn at random: SIGKILL inside a training step, inside a
  checkpoint write (a random share of its bytes on disk), before and after its rename, inside a
  metrics line; a full disk (ENOSPC) and a real file-size limit (EFBIG) during a checkpoint write;
  a NaN loss. Killed and full-disk runs are then resumed and must end bit-identical to an
  uninterrupted run with every epoch's metrics;
- random configs for every registered variant: valid ones must train a step, sample, reconstruct
  and estimate log p(x) with finite values; invalid ones must be a ConfigError naming the field.

Each case is counted as a clean error (one line on the CLI / a VAEZooError naming the problem), a
correct result, or a failure: a traceback (or vaezoo's "internal error" line), a hang, or a wrong
outcome (a wrong exit code, a message without the expected content, a silent success, lost files).
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import typing
import warnings
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(REPO / "tests"))
import robustness_cases as catalogue  # noqa: E402
from common import print_header  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo.zoo.registry import REGISTRY  # noqa: E402

OUTCOMES = ("clean error", "correct result", "traceback", "hang", "wrong")


def classify_cli(case: catalogue.Case, returncode: int | None, stderr: str) -> tuple[str, str]:
    """(outcome, detail) of one CLI run."""
    if returncode is None:
        return "hang", "no exit within the time limit"
    lines = catalogue.error_lines(stderr)
    if "Traceback" in stderr or any("internal error" in line for line in lines):
        return "traceback", (lines or [""])[-1][:200]
    if returncode != case.expected_exit:
        return "wrong", f"exit code {returncode}, expected {case.expected_exit}: {lines[-1:] or 'no error'}"
    if not case.expect:
        return ("correct result", "") if not lines else ("wrong", f"succeeded but printed {lines}")
    if len(lines) != 1 or not lines[0].startswith("error: "):
        return "wrong", f"{len(lines)} error lines: {lines[:3]}"
    if case.expect not in lines[0]:
        return "wrong", f"{case.expect!r} not in {lines[0]!r}"
    return "clean error", ""


def run_cli_case(case: catalogue.Case, timeout: float) -> tuple[str, str]:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if case.setup is not None:
            case.setup(tmp)
        env = dict(os.environ)
        if case.plugins:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp / "site"), env.get("PYTHONPATH")) if p)
        try:
            done = subprocess.run([sys.executable, "-m", "vaezoo.cli", *case.args(tmp)], capture_output=True,
                                  text=True, timeout=timeout, env=env, cwd=tmp)
        except subprocess.TimeoutExpired:
            return classify_cli(case, None, "")
        return classify_cli(case, done.returncode, done.stderr)


def run_python_case(case: catalogue.Case) -> tuple[str, str]:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if case.setup is not None:
            case.setup(tmp)
        if case.plugins:
            sys.path.insert(0, str(tmp / "site"))
            REGISTRY.refresh()
        try:
            with warnings.catch_warnings():  # the plugin cases warn on purpose; the error is what counts
                warnings.simplefilter("ignore")
                case.python(tmp)
        except vaezoo.VAEZooError as error:
            message = str(error)
            if case.expect in message and "\n" not in message:
                return "clean error", ""
            return "wrong", f"{case.expect!r} not in {message!r}"
        except Exception as error:  # any other failure is what this counts
            return "traceback", f"{type(error).__name__}: {error}"[:200]
        finally:
            if case.plugins:
                sys.path.remove(str(tmp / "site"))
                for module in [m for m in sys.modules if m.startswith("robust_")]:
                    del sys.modules[module]
                REGISTRY.refresh()
        return "wrong", "no error: a silent result"


def run_faults(trials: int, seed: int, timeout: float) -> list[tuple[str, str, str, str]]:
    """(category, case, outcome, detail) for each fault trial."""
    rows = []
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as folder:
        reference_run = Path(folder) / "reference"
        done = subprocess.run([sys.executable, "-m", "vaezoo.cli", *catalogue.train_args(reference_run)],
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise SystemExit(f"the reference run failed: {done.stderr[-500:]}")
        from safetensors.torch import load_file

        reference = load_file(reference_run / "model.safetensors")
        for fault in catalogue.FAULTS:
            for trial in range(trials):
                at, fraction = catalogue.fault_point(fault, rng)
                unit = "step" if fault in ("kill-mid-step", "nan-loss") else ("metrics line" if "metrics" in fault else "checkpoint")
                torn = fault in ("kill-writing-checkpoint", "kill-writing-metrics", "disk-full", "file-size-limit")
                label = f"{fault} at {unit} {at}" + (f", {fraction:.0%} of its bytes" if torn else "")
                run = Path(folder) / f"{fault}-{trial}"
                outcome, detail = _one_fault(fault, at, fraction, run, reference, timeout)
                rows.append(("faults", label, outcome, detail))
    return rows


def _one_fault(fault: str, at: int, fraction: float, run: Path, reference: dict, timeout: float) -> tuple[str, str]:
    try:
        child = catalogue.run_with_fault(fault, at, fraction, catalogue.train_args(run), timeout=timeout)
    except subprocess.TimeoutExpired:
        return "hang", "the faulty run did not end"
    if "Traceback" in child.stderr:
        return "traceback", catalogue.error_lines(child.stderr)[-1][:200]
    problems = catalogue.fault_problems(fault, at, child, run)
    if problems:
        return "wrong", "; ".join(problems)[:300]
    if fault == "nan-loss":
        return "clean error", ""
    try:
        resumed = subprocess.run([sys.executable, "-m", "vaezoo.cli", *catalogue.train_args(run, resume=True)],
                                 capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "hang", "the resumed run did not end"
    if resumed.returncode != 0:
        return "wrong", f"resume failed: {catalogue.error_lines(resumed.stderr)[-1:]}"
    problems = catalogue.finished_problems(run, reference)
    if problems:
        return "wrong", "; ".join(problems)
    return ("correct result", "") if fault.startswith("kill") else ("clean error", "")


def run_sweep(per_variant: int, seed: int) -> list[tuple[str, str, str, str]]:
    """Random valid and invalid configs for every registered variant."""
    from vaezoo.core.config import config_fields, replace_config

    rng = random.Random(seed)
    rows = []
    for name in vaezoo.list_models():
        model_class = vaezoo.get_model_class(name)
        for _ in range(per_variant):
            if rng.random() < 0.5:
                shape = (rng.randint(1, 3), rng.randint(1, catalogue.MAX_SIDE), rng.randint(1, catalogue.MAX_SIDE))
            else:
                shape = (rng.randint(1, catalogue.MAX_FEATURES),)
            specs = catalogue.field_specs(model_class)
            fields = rng.sample(list(specs), k=min(3, len(specs)))
            values = {f: _draw(specs[f], rng) for f in fields}
            batch = rng.randint(1, catalogue.MAX_BATCH)
            label = f"{name} {shape} batch {batch} {values}"
            try:
                catalogue.check_random_model(name, shape, batch, values)
                rows.append(("random valid configs", label, "correct result", ""))
            except AssertionError as error:
                rows.append(("random valid configs", label, "wrong", str(error)[:200]))
            except Exception as error:
                rows.append(("random valid configs", label, "traceback", f"{type(error).__name__}: {error}"[:200]))
        hints = typing.get_type_hints(model_class.config_class)
        base = vaezoo.create_model(name, preset="tiny", input_shape=(1, 8, 8)).config
        for _ in range(per_variant):
            field = rng.choice(sorted(config_fields(model_class.config_class)))
            value = rng.choice(catalogue.INVALID_EXAMPLES[catalogue.type_key(hints[field])])
            label = f"{name} {field}={value!r}"
            try:
                replace_config(base, **{field: value})
                rows.append(("random invalid configs", label, "wrong", "accepted"))
            except vaezoo.ConfigError as error:
                ok = field in str(error) and "\n" not in str(error)
                rows.append(("random invalid configs", label, "clean error" if ok else "wrong", "" if ok else str(error)))
            except Exception as error:
                rows.append(("random invalid configs", label, "traceback", f"{type(error).__name__}: {error}"[:200]))
    return rows


def _draw(spec: tuple, rng: random.Random):
    kind, *args = spec
    if kind == "int":
        return rng.randint(args[0], args[1])
    if kind == "float":
        return rng.uniform(args[0], args[1])
    if kind == "choice":
        return rng.choice(args)
    min_len, max_len, low, high = args
    return tuple(rng.randint(low, high) for _ in range(rng.randint(min_len, max_len)))


def main() -> int:
    """Run everything, print the counts; return the number of failures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=2, help="random points per fault kind (default 2)")
    parser.add_argument("--sweep", type=int, default=40, help="random valid and invalid configs per variant (default 40 each)")
    parser.add_argument("--jobs", type=int, default=2, help="CLI subprocesses at once (default 2)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds before a case counts as a hang")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print_header("vaezoo robustness: bad input and faults")
    start = time.perf_counter()

    rows: list[tuple[str, str, str, str]] = []
    cli_cases = [case for case in catalogue.CASES if case.argv]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda case: run_cli_case(case, args.timeout), cli_cases))
    rows += [(f"CLI: {case.category}", case.name, *result) for case, result in zip(cli_cases, results)]
    rows += [(f"Python: {case.category}", case.name, *run_python_case(case)) for case in catalogue.CASES if case.python]
    rows += run_faults(args.trials, args.seed, args.timeout)
    rows += run_sweep(args.sweep, args.seed)
    failures = report(rows)
    print(f"\n{len(rows)} cases in {time.perf_counter() - start:.0f} s")
    return failures


def report(rows: list[tuple[str, str, str, str]]) -> int:
    counts: dict[str, Counter] = defaultdict(Counter)
    for category, _, outcome, _ in rows:
        counts[category][outcome] += 1
    width = max(len(c) for c in counts) + 2
    print(f"{'category':<{width}} {'tried':>6} {'clean error':>12} {'correct':>8} {'traceback':>10} {'hang':>5} {'wrong':>6}")
    total: Counter = Counter()
    for category, counter in counts.items():
        total.update(counter)
        print(f"{category:<{width}} {sum(counter.values()):>6} {counter['clean error']:>12} {counter['correct result']:>8} "
              f"{counter['traceback']:>10} {counter['hang']:>5} {counter['wrong']:>6}")
    print(f"{'all':<{width}} {sum(total.values()):>6} {total['clean error']:>12} {total['correct result']:>8} "
          f"{total['traceback']:>10} {total['hang']:>5} {total['wrong']:>6}")
    failures = [row for row in rows if row[2] not in ("clean error", "correct result")]
    if failures:
        print("\nfailures:")
        for category, case, outcome, detail in failures:
            print(f"  [{category}] {case}: {outcome}: {detail}")
    faults = [row for row in rows if row[0] == "faults"]
    if faults:
        print("\nfault points tried: " + "; ".join(f"{case} ({outcome})" for _, case, outcome, _ in faults))
    return len(failures)


if __name__ == "__main__":
    sys.exit(1 if main() else 0)
