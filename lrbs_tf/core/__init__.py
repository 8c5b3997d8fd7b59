"""η/S itself: parsing and rescaling ratios (:mod:`.ratio`), schedules as pure functions of
epochs (:mod:`.schedules`), training plans giving each step's S and η/S (:mod:`.plan`), and the
ratio-scaled optimizer with its train step (:mod:`.optimizers`, :mod:`.steplog`).

May import: :mod:`lrbs_tf.compat` only. ``ratio``, ``schedules`` and ``plan`` are pure Python.
"""
