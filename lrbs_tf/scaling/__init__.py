"""The scaling test: how far η/S equivalence carries from one starting point θ0. Branches from
θ0 at k× the base batch under each rescaling rule, the noise floor of the base under several
data orders, the SVAG test of the SDE itself, predictions from probes at θ0, the verdict
(:mod:`.experiment`, read it top to bottom). The settings (:mod:`.settings`) and the plan of
branches (:mod:`.plan`), pure Python; the data order (:mod:`.stream`), training a branch
(:mod:`.branches`, :mod:`.svag`), where θ0 comes from (:mod:`.start`), the test's folder
(:mod:`.folder`), the floor, the verdict and the predictions (:mod:`.verdict`,
:mod:`.report`), TensorBoard's HParams (:mod:`.hparams`), the figure (:mod:`.figure`).

May import: :mod:`lrbs_tf.core`, :mod:`lrbs_tf.data`, :mod:`lrbs_tf.models`,
:mod:`lrbs_tf.probes`, :mod:`lrbs_tf.training`, :mod:`lrbs_tf.theory`, :mod:`lrbs_tf.sweeps`,
:mod:`lrbs_tf.distribute`. Prints nothing (``say`` callbacks report progress).
"""
