"""Ctrl-C or SIGTERM during ``vaezoo train``: one line that names the checkpoint kept and the command to resume.

A second Ctrl-C while that line is written is ignored rather than killing the process with a
traceback; the checkpoint on disk is complete either way (checkpoints are written atomically).
"""
from __future__ import annotations

import contextlib
import shlex
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import click

from vaezoo.training.run_folder import CHECKPOINT_NAME, RunFolder

INTERRUPTED_EXIT = 130  # 128 + SIGINT, as shells report an interrupted command


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is so that it ends as Ctrl-C does."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


@contextlib.contextmanager
def reported_interrupts(out_dir: str | Path, resume_command: list[str]) -> Iterator[None]:
    """Run the block; on Ctrl-C or SIGTERM, print the one line and exit with code 130."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    except KeyboardInterrupt as interrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the message short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        what = "terminated (SIGTERM)" if isinstance(interrupt, Terminated) else "interrupted"
        click.echo(f"error: {what}; {checkpoint_kept(Path(out_dir))}; resume with: {shlex.join(resume_command)}", err=True)
        sys.exit(INTERRUPTED_EXIT)
    finally:
        signal.signal(signal.SIGTERM, previous)


def checkpoint_kept(out_dir: Path) -> str:
    """Which checkpoint the run folder holds, in words."""
    counters = RunFolder(out_dir).read_counters()
    if not counters or not (out_dir / CHECKPOINT_NAME).is_file():
        return f"no epoch had finished, so {out_dir} holds no checkpoint yet (resuming starts the run over)"
    return (f"{out_dir / CHECKPOINT_NAME} is kept (stage {counters.get('stage_index', 0) + 1}, "
            f"{counters.get('epochs_done', 0)} epochs done)")
