"""One training run: its settings (:mod:`.config`), the run itself (:mod:`.run`:
:func:`~lrbs_tf.training.run.train` and :class:`~lrbs_tf.training.run.Run`, every stage in
order), its folder (:mod:`.folder`: claim, lock, damage checks, its files), its checkpoints
(:mod:`.checkpoint`), how it stops (:mod:`.signals`), the Keras side (:mod:`.fitting`: compile,
fit, XLA), its callbacks (:mod:`.callbacks`) and TensorBoard files (:mod:`.tensorboard`), the
loss at the weights (:mod:`.evaluation`) and its records (:mod:`.results`).

May import: :mod:`lrbs_tf.core`, :mod:`lrbs_tf.data`, :mod:`lrbs_tf.models`,
:mod:`lrbs_tf.probes`, :mod:`lrbs_tf.distribute`, :mod:`lrbs_tf.compat`.
"""
