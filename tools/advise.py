"""Advise on moving a finished run to another batch size: η per rule, and whether η/S theory
still holds there.

    python tools/advise.py runs/<run> --batch-size 2000 [--json]

The command is :mod:`lrbs_tf.cli.advise` (installed as ``lrbs-advise``).
"""

import sys

from lrbs_tf.cli.advise import main

if __name__ == "__main__":
    sys.exit(main())
