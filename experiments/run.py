"""Train one model at a chosen learning-rate-to-batch-size ratio η/S (``--help`` for the flags).

    python experiments/run.py --ratio 0.005/640

The command is :mod:`lrbs_tf.cli.run` (installed as ``lrbs-run``); its docstring has the
examples, the measured run times and what a run writes.
"""

import sys

from lrbs_tf.cli.run import main

if __name__ == "__main__":
    sys.exit(main())
