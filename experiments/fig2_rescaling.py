"""Paper Fig. 2: moving a recipe to a larger batch — rescale η linearly, by √S, or not at all.

    python experiments/fig2_rescaling.py                          # MLP, 0.1/50 → S = 400
    python experiments/fig2_rescaling.py --base 0.1/50 --batch-size 1000 --epochs 20
    python experiments/fig2_rescaling.py --model resnet56 --dataset cifar10 --epochs 200 \\
        --lr-schedule milestones:@60,100,140,180                     # paper (ResNet56)

The command is :mod:`lrbs_tf.cli.fig2` (installed as ``lrbs-fig2``); its docstring has the
settings, the measured run time and results.
"""

import sys

from lrbs_tf.cli.fig2 import main

if __name__ == "__main__":
    sys.exit(main())
