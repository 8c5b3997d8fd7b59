"""Probes of a model at fixed weights: Hessian-vector products (:mod:`.hessian`), matrix-free
estimators (:mod:`.spectral`), gradient noise (:mod:`.noise`), repeated measurements during and
after training (:mod:`.prober`), and the loss along lines and planes (:mod:`.landscape`).

May import: :mod:`lrbs_tf.distribute`, :mod:`lrbs_tf.compat`. Probes never change a model.
"""
