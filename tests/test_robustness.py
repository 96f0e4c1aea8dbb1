"""Bad input and faults: every case ends in a clear error (one line on the CLI, a VAEZooError in
Python) or a correct result, never a traceback, a hang, a silent wrong answer or lost files.

The catalogue (unknown names, tags and fields; bad --set values; bad data; bad weight files and
model folders; broken plugins) lives in robustness_cases.py, which benchmarks/robustness.py also
runs and counts. The faults (SIGKILL at random points of training and of checkpoint writes, a full
disk, a NaN loss) run in a child process that injects them; the run is then resumed here. More
cases of the same kinds, at the level of each component, are in test_data.py (every reader),
test_pretrained.py (strict loading), test_registry.py (plugin isolation) and test_training.py
(a SIGKILL from outside, mid-epoch); random shapes and configs are in test_properties.py.
"""
from __future__ import annotations

import errno
import json
import random
import signal
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from robustness_cases import (
    CASES,
    STEPS_PER_EPOCH,
    Case,
    error_lines,
    fault_point,
    fault_problems,
    finished_problems,
    run_with_fault,
    train_args,
)
from safetensors.torch import load_file

import vaezoo
from vaezoo.cli import main
from vaezoo.errors import StorageError
from vaezoo.io.atomic import atomic_write
from vaezoo.zoo.registry import REGISTRY

# The plugin cases install broken plugins on purpose; the registry's warnings about them are expected.
pytestmark = pytest.mark.filterwarnings("ignore:.*(failed to import|is claimed by|is skipped):RuntimeWarning")


def case_id(case: Case) -> str:
    return f"{case.category}: {case.name}"


@pytest.fixture
def case_folder(tmp_path, monkeypatch, request):
    """The case's folder, with its files written and, for plugin cases, its site on sys.path."""
    case: Case = request.param
    if case.setup is not None:
        case.setup(tmp_path)
    if case.plugins:
        monkeypatch.syspath_prepend(str(tmp_path / "site"))
        REGISTRY.refresh()
    yield case, tmp_path
    if case.plugins:
        monkeypatch.undo()
        for module in [m for m in sys.modules if m.startswith("robust_")]:
            del sys.modules[module]
        REGISTRY.refresh()


@pytest.mark.parametrize("case_folder", [c for c in CASES if c.argv], ids=case_id, indirect=True)
def test_cli_ends_in_one_line_error_or_success(case_folder) -> None:
    case, tmp = case_folder
    result = CliRunner().invoke(main, case.args(tmp))
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == case.expected_exit, (result.stderr, result.stdout)
    lines = error_lines(result.stderr)
    if case.expect:
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
        assert case.expect in lines[0] and "internal error" not in lines[0], lines[0]
    else:
        assert lines == [], lines


@pytest.mark.parametrize("case_folder", [c for c in CASES if c.python], ids=case_id, indirect=True)
def test_python_raises_a_vaezoo_error_naming_the_problem(case_folder) -> None:
    case, tmp = case_folder
    with pytest.raises(vaezoo.VAEZooError) as info:
        case.python(tmp)
    message = str(info.value)
    assert case.expect in message and "\n" not in message, message


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path) -> None:
    target = tmp_path / "weights.bin"
    target.write_text("previous")

    def fill_the_disk(tmp: str) -> None:
        Path(tmp).write_text("half of the new")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(StorageError, match=rf"cannot write {target}: the disk is full .*previous version, if any, is intact"):
        atomic_write(target, fill_the_disk)
    assert target.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.bin"]


# --- faults -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The final weights of the uninterrupted run."""
    run = tmp_path_factory.mktemp("reference") / "run"
    result = CliRunner().invoke(main, train_args(run))
    assert result.exit_code == 0, result.stderr
    return load_file(run / "model.safetensors")


def resume(run: Path) -> None:
    result = CliRunner().invoke(main, train_args(run, resume=True))
    assert result.exit_code == 0, result.stderr


KILLS = ["kill-mid-step", "kill-writing-checkpoint", "kill-before-rename", "kill-after-rename", "kill-writing-metrics"]


@pytest.mark.slow
@pytest.mark.parametrize("fault", KILLS)
def test_sigkill_at_a_random_point_then_resume_loses_nothing(fault: str, reference, tmp_path) -> None:
    at, fraction = fault_point(fault, random.Random(fault))
    run = tmp_path / "run"
    child = run_with_fault(fault, at, fraction, train_args(run))
    assert child.returncode == -signal.SIGKILL, child.stderr
    resume(run)
    assert finished_problems(run, reference) == []


@pytest.mark.slow
def test_sigkill_during_the_first_checkpoint_then_resume_starts_over(reference, tmp_path) -> None:
    run = tmp_path / "run"
    child = run_with_fault("kill-writing-checkpoint", 1, 0.5, train_args(run))
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert not (run / "checkpoints" / "last.safetensors").exists() and (run / "metrics.jsonl").exists()
    resume(run)
    assert finished_problems(run, reference) == []


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["disk-full", "file-size-limit"])
def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(fault: str, reference, tmp_path) -> None:
    at, fraction = fault_point(fault, random.Random(fault))
    run = tmp_path / "run"
    child = run_with_fault(fault, at, fraction, train_args(run))
    assert fault_problems(fault, at, child, run) == []  # one line, the checkpoint of epoch at - 1 intact
    resume(run)
    assert finished_problems(run, reference) == []


@pytest.mark.slow
def test_a_nan_loss_stops_with_one_line_and_the_last_good_weights(tmp_path) -> None:
    run = tmp_path / "run"
    at = 2 * STEPS_PER_EPOCH + 3  # a step of epoch 3
    child = run_with_fault("nan-loss", at, 0.0, train_args(run))
    assert fault_problems("nan-loss", at, child, run) == []  # one line; model.safetensors = epoch 2's weights
    evaluated = CliRunner().invoke(main, ["eval", str(run), "--data", "digits", "--iw-samples", "0", "--json"])
    assert evaluated.exit_code == 0, evaluated.stderr
    assert 0 < json.loads(evaluated.stdout)["neg_elbo"] < 100


def test_atomic_writes_get_the_mode_open_would_give(tmp_path) -> None:
    from vaezoo.io import atomic as checkpoint

    checkpoint.atomic_write_text(tmp_path / "out.txt", "x")  # mkstemp alone leaves 0600, unreadable to others
    (tmp_path / "plain.txt").write_text("x")
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777
