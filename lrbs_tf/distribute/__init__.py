"""tf.distribute for lrbs_tf: strategies and devices (:mod:`.strategy`), clusters and the chief
(:mod:`.cluster`), and the watchdog that keeps multi-worker runs from hanging
(:mod:`.watchdog`).

May import: :mod:`lrbs_tf.compat` only.
"""

from lrbs_tf.distribute.cluster import (  # noqa: E402,F401
    DistributeError,
    chief_task,
    cluster_from_env,
    free_ports,
    local_tf_config,
)
from lrbs_tf.distribute.strategy import *  # noqa: E402,F401,F403
from lrbs_tf.distribute.strategy import PEER_LOST_EXIT, STRATEGIES  # noqa: E402,F401
from lrbs_tf.distribute.watchdog import Watchdog, heartbeat, pause_watchdog, start_watchdog  # noqa: E402,F401
