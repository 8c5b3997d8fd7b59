"""Shared command-line plumbing: one-line errors with exit status 2, quiet TensorFlow start-up."""
from __future__ import annotations

import argparse
import os
import sys


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage block) and exits with status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def fail(prog: str, message: str, status: int = 2):
    """Print ``prog: error: message`` (one line) to stderr and exit."""
    sys.stderr.write(f"{prog}: error: {' '.join(str(message).split())}\n")
    sys.exit(status)


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ info logs; call before TensorFlow is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
