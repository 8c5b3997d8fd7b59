"""One training run: its settings (:mod:`.config`, :mod:`.flags`), its folder
(:mod:`.runfolder`, :mod:`.runio`, :mod:`.checkpoint`), its Keras callbacks and TensorBoard
files (:mod:`.callbacks`, :mod:`.tensorboard`), the loss at the weights
(:mod:`.evaluation`), and the run itself (:mod:`.run`: :func:`~lrbs_tf.training.run.train`).

May import: :mod:`lrbs_tf.core`, :mod:`lrbs_tf.data`, :mod:`lrbs_tf.models`,
:mod:`lrbs_tf.probes`, :mod:`lrbs_tf.distribute`, :mod:`lrbs_tf.compat`.
"""
