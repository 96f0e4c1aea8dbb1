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

F = TypeVar("F", bound=Callable[..., Any])

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
data_dir_option = click.option("--data-dir", type=click.Path(), help="Folder holding the dataset's files.")
split_option = click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True)
split_seed_option = click.option("--split-seed", type=int, default=0, show_default=True,
                                 help="Seed of the train/val/test split.")
device_option = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)


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


def output_options(command: F) -> F:
    """-o/--out and --device, shared by every application command."""
    command = device_option(command)
    return click.option("-o", "--out", "out", required=True, type=click.Path(),
                        help="Output file; its extension picks the format (.png grid, .npy, .npz, .csv).")(command)
