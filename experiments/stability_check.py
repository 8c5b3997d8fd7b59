"""Check the stability verdict of the batch-size advisor against what SGD actually does.

    python experiments/stability_check.py

The command is :mod:`lrbs_tf.cli.stability`; its docstring has the settings and results.
"""

import sys

from lrbs_tf.cli.stability import main

if __name__ == "__main__":
    sys.exit(main())
