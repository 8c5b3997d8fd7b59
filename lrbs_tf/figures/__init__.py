"""The paper's figures as library functions: each trains (or reuses) its runs and returns a
report (tables, correlations, paths of the plots it wrote); :mod:`.plots` draws them.

May import: everything but :mod:`lrbs_tf.cli`. Prints nothing (``say`` callbacks report
progress).
"""
