"""Probes of a model at fixed weights: Hessian-vector products (:mod:`.hessian`), matrix-free
estimators (:mod:`.spectral`), gradient noise (:mod:`.noise`; exact per-example gradient norms
in :mod:`.noise_norms`), repeated measurements during and after training (:mod:`.prober`), the
:class:`~.callbacks.Sharpness` callback for any ``model.fit`` (:mod:`.callbacks`), and the loss
along lines and planes (:mod:`.landscape`).

May import: :mod:`lrbs_tf.distribute`, :mod:`lrbs_tf.core`, :mod:`lrbs_tf.compat`. Probes never
change a model.
"""
