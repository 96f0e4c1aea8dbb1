"""The ``vaezoo`` command line: the click group, its one-line errors, and the commands registered on it.

    vaezoo list                 # every registered model
    vaezoo list '*vae' --pretrained
    vaezoo info vae-mlp

Each command parses, calls one public function, prints: the model commands live in
vaezoo.cli.models, the applications in vaezoo.cli.apps, their shared options in vaezoo.cli.options.
Errors are one line on stderr and a non-zero exit; set VAEZOO_DEBUG=1 to see a traceback. Ctrl-C
is one line too, with exit code 130 (the ``vaezoo`` command's light entry point, vaezoo_entry,
handles the seconds before this module is imported).
"""
from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import click

from vaezoo.cli import apps, models
from vaezoo.cli.interrupts import INTERRUPTED_EXIT
from vaezoo.core.distributed import exit_leaving_process_group
from vaezoo.errors import VAEZooError

__all__ = ["main"]
BROKEN_PIPE_EXIT = 141  # 128 + SIGPIPE, what a shell reports for a command whose reader closed the pipe


class VAEZooGroup(click.Group):
    """Turns every error into one line on stderr and exit code 1 (2 for usage errors, as click does)."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            self._main_and_exit(*args, **kwargs)
        except SystemExit as exit:
            if exit.code is None or isinstance(exit.code, int):
                exit_leaving_process_group(exit.code)  # under torchrun: see there why it ends the process at once
            raise

    def _main_and_exit(self, *args: Any, **kwargs: Any) -> None:
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as error:  # click would print usage, a hint and the error on four lines
            if isinstance(error, getattr(click.exceptions, "NoArgsIsHelpError", ())):  # bare `vaezoo`: the help
                error.show()
                sys.exit(error.exit_code)
            where = error.ctx.command_path if error.ctx is not None else "vaezoo"
            _fail(f"{error.format_message()} (see `{where} --help`)", code=error.exit_code)
        except click.ClickException as error:
            _fail(error.format_message(), code=error.exit_code)
        except click.exceptions.Abort as error:  # click turns a Ctrl-C outside a command (while parsing) into Abort
            if isinstance(error.__context__, KeyboardInterrupt):
                _fail("interrupted before the command started; nothing was written", code=INTERRUPTED_EXIT)
            _fail("aborted")
        sys.exit(result if isinstance(result, int) else 0)  # what click's standalone mode does on success

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except VAEZooError as error:
            _fail(str(error))
        except KeyboardInterrupt:  # `vaezoo train` reports its own, naming the checkpoint kept
            _fail(_interrupted(ctx.invoked_subcommand or ""), code=INTERRUPTED_EXIT)
        except BrokenPipeError:  # `vaezoo list | head`: the reader has gone, so stop quietly as Unix tools do
            _silence_stdout()
            sys.exit(BROKEN_PIPE_EXIT)
        except Exception as error:  # a bug: still one line, with a way to see the traceback
            if os.environ.get("VAEZOO_DEBUG"):
                raise
            _fail(f"internal error: {type(error).__name__}: {error} (rerun with VAEZOO_DEBUG=1 for the traceback)")


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit cannot raise BrokenPipeError again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (e.g. click's test runner)
        pass


def _interrupted(command: str) -> str:
    """What a Ctrl-C outside training ends with; before `train` runs, nothing has been written."""
    return "interrupted before training started; nothing was written" if command == "train" else "interrupted"


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {' '.join(str(message).split())}", err=True)
    sys.exit(code)


@click.group(cls=VAEZooGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vaezoo")
def main() -> None:
    """vaezoo: a plugin-based zoo of variational autoencoders.

    Example: vaezoo list && vaezoo info vae-mlp
    """
    warnings.formatwarning = _one_line_warning


def _one_line_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> str:
    return f"warning: {' '.join(str(message).split())}\n"


for _command in (*models.COMMANDS, *apps.COMMANDS):
    main.add_command(_command)
