"""Check the SDE / Ornstein–Uhlenbeck theory of SGD numerically, and see where it breaks.

    python experiments/theory_check.py [--chains 1000] [--logdir runs/theory]

The command is :mod:`lrbs_tf.cli.theory` (installed as ``lrbs-theory``); its docstring has the
settings, the measured run time and results.
"""

import sys

from lrbs_tf.cli.theory import main

if __name__ == "__main__":
    sys.exit(main())
