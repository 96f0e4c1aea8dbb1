"""Options that several ``vaezoo`` commands share, declared once so their names and help texts agree.

    @click.command("eval")
    @data_dir_option
    @split_seed_option
    @json_option
    def eval_command(data_dir: str | None, split_seed: int, as_json: bool) -> None: ...
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from vaezoo.core.config import parse_override
from vaezoo.core.distributed import DEVICE_NAMES, check_device_name
from vaezoo.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
data_dir_option = click.option("--data-dir", type=click.Path(), help="Folder holding the dataset's files.")
split_option = click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True)
split_seed_option = click.option("--split-seed", type=int, default=0, show_default=True,
                                 help="Seed of the train/val/test split.")
label_column_option = click.option(
    "--label-column", help="The label column of a CSV table (default: a column named label, class or y); text "
                           "labels become class ids 0..K-1 in sorted order, their names kept in config.json.")


class DeviceType(click.ParamType):
    """auto, cpu, cuda, cuda:N or mps; whether this machine has it is checked when the device is used."""

    name = "auto|cpu|cuda[:N]|mps"

    def get_metavar(self, *args: Any, **kwargs: Any) -> str:
        return self.name  # as written: click would upper-case it

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return check_device_name(str(value).strip().lower())
        except ConfigError as error:
            self.fail(str(error).removeprefix("device="), param, ctx)


DEVICE = DeviceType()
DEVICE_HELP = f"Where to run: {DEVICE_NAMES}; auto is the first CUDA GPU if there is one, else the CPU."
device_option = click.option("--device", type=DEVICE, default="auto", show_default=True, help=DEVICE_HELP)
quiet_option = click.option("--quiet", is_flag=True, help="No progress bar (none is drawn when stderr is not a terminal).")


def set_option(help_text: str) -> Callable[[F], F]:
    """``--set KEY=VALUE`` (repeatable), read with :func:`parse_sets`; ``help_text`` says which fields it reaches."""
    return click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=help_text)


def parse_sets(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``("latent_dim=10", "hidden_dims=[256]")`` -> ``{"latent_dim": 10, "hidden_dims": [256]}``; a bad pair raises."""
    return dict(parse_override(pair) for pair in pairs)


def data_options(command: F) -> F:
    """--data, --split, --data-dir and --split-seed, shared by the application commands that read examples."""
    for option in reversed([
        click.option("--data", "data_name", required=True, help="Dataset name or path, as for train (e.g. digits)."),
        split_option,
        data_dir_option,
        split_seed_option,
    ]):
        command = option(command)
    return command


def output_options(formats: str) -> Callable[[F], F]:
    """-o/--out and --device, shared by every application command; ``formats`` says what this command writes.

    >>> @output_options("a .png grid, .npy or .npz")  # doctest: +SKIP
    """
    def decorate(command: F) -> F:
        command = device_option(command)
        return click.option("-o", "--out", "out", required=True, type=click.Path(),
                            help=f"Output file: {formats}; its extension picks the format.")(command)
    return decorate
