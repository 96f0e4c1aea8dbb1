"""``python -m vaezoo.cli``: the same command line as ``vaezoo`` (torchrun needs a module to run).

It runs through vaezoo_entry like the ``vaezoo`` command, so Ctrl-C ends in one line and exit code
130; only a Ctrl-C during ``import vaezoo`` itself, before this file runs, still prints Python's traceback.
"""
from vaezoo_entry import main

main()
