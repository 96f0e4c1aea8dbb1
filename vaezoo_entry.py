"""The ``vaezoo`` command's entry point, light on purpose, so that Ctrl-C at any moment ends in one line and exit code 130.

The console script runs :func:`main`. It lives outside the ``vaezoo`` package because importing
anything in that package first imports torch (about two seconds, in which a Ctrl-C used to print
a traceback); this module imports the standard library only, installs the SIGINT handling, and
only then imports the real command line, vaezoo.cli.

What a Ctrl-C does, whenever it comes:

- while the command line is still being imported, nothing has run: the one line is written and the
  process ends at once with 130 (raising KeyboardInterrupt inside torch's import can abort it from C++);
- then the first raises KeyboardInterrupt where the program is, so that the code there reports it
  in one line (``vaezoo train`` names the checkpoint kept and the command that resumes it) and
  exits with 130;
- the second is ignored, so that it cannot cut that line short or turn it into a traceback;
- a third, or one while the process is already exiting, ends it at once with 130 (an escape
  hatch if cleaning up hangs).

The few milliseconds before Python runs this module's first line are Python's own. ``python -m
vaezoo.cli`` runs the same handling, but only once ``import vaezoo`` is done: use the ``vaezoo``
command (or ``python -m vaezoo_entry``) where Ctrl-C during start-up matters.
"""
from __future__ import annotations

import os
import signal
import sys
from types import FrameType

INTERRUPTED_EXIT = 130  # 128 + SIGINT, as shells report an interrupted command
_hard_exit = os._exit  # bound now: while a plugin is imported vaezoo.zoo.plugin_guard replaces os._exit

_presses = 0
_phase = "starting"  # then "running" once vaezoo.cli is imported, then "exiting"
_starting_line = b""


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _presses
    _presses += 1
    if _phase == "starting":
        _write_stderr(_starting_line)
        _hard_exit(INTERRUPTED_EXIT)
    if _phase == "exiting" or _presses >= 3:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, RuntimeError):  # closed, or being written by the interrupted code
                pass
        _hard_exit(INTERRUPTED_EXIT)
    if _presses == 1:
        raise KeyboardInterrupt


def _write_stderr(data: bytes) -> None:
    try:
        os.write(2, data)
    except OSError:  # stderr closed: the exit code still says it
        pass


def interrupted_before_start(argv: list[str]) -> str:
    """The line for a Ctrl-C while the command line was still being imported: nothing had run yet."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    if command == "train":
        return "error: interrupted before training started; nothing was written"
    return f"error: interrupted before `vaezoo{' ' + command if command else ''}` started; nothing was written"


def main() -> None:
    """Run the ``vaezoo`` command line with Ctrl-C handled from the first line on."""
    global _phase, _starting_line
    _starting_line = (interrupted_before_start(sys.argv[1:]) + "\n").encode()
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        from vaezoo.cli import main as command_line  # the heavy import (torch), now that Ctrl-C is handled

        _phase = "running"
        command_line()
    except KeyboardInterrupt:  # what vaezoo.cli reports itself never gets here
        print("error: interrupted", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)
    finally:
        _phase = "exiting"


if __name__ == "__main__":
    main()
