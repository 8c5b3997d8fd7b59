"""lrbs_tf: the learning-rate-to-batch-size ratio η/S of SGD in Keras 3 / TensorFlow.

The package follows the paper's pipeline, one subpackage per stage (each says what it owns and
what it may import; ``tests/test_layout.py`` checks the rules):

    core        η/S itself: ratios, rescaling rules, schedules, training plans, the optimizer
    data        datasets as arrays, splits, the variable-batch tf.data pipeline
    models      the model registry: names, builders, per-model defaults
    distribute  tf.distribute strategies, clusters and chief rules, the multi-worker watchdog
    probes      curvature and gradient noise at fixed weights, loss landscapes
    training    one run: settings, run folders, checkpoints, callbacks, the training loop
    theory      the SDE/Ornstein–Uhlenbeck results, simulators, batch-size advice
    sweeps      keras-tuner over η/S, sweep tables and correlations
    figures     the paper's figures as functions returning reports, and their plots
    cli         the command-line tools (``lrbs-run``, ``python experiments/run.py``, …)
    compat      every use of Keras or TensorFlow internals, in one place

Importing the package loads nothing heavy. ``lrbs_tf.optimizers`` stays importable under its
old name (saved models refer to it).
"""

__version__ = "0.2.0"
