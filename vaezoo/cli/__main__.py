"""``python -m vaezoo.cli``: the same command line as ``vaezoo`` (torchrun needs a module to run)."""
from vaezoo.cli import main

main()
