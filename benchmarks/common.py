"""What every benchmark prints first: the command, the commit, the machine and the library versions."""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys


def print_header(title: str) -> None:
    import torch

    import vaezoo

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(__file__)).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    print(f"# {title}")
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(f"commit: {commit}")
    print(f"machine: {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
          + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"))
    print(f"versions: python {platform.python_version()}, torch {torch.__version__}, vaezoo {vaezoo.__version__}")
    print()


def positive_int(text: str) -> int:
    """argparse type: an int >= 1, else a one-line usage error naming the value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give one >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1; give a whole number >= 1")
    return value
