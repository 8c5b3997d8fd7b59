"""The cluster of a multi-worker run: ``TF_CONFIG``, which task is the chief, local ports.

Pure Python: readable before any strategy exists (a CLI decides who writes its outputs).
"""

from __future__ import annotations

import json
import os

STRATEGIES = ("auto", "none", "mirrored", "multiworker")


class DistributeError(RuntimeError):
    """A strategy, device list or cluster that cannot be used; the message is one line."""


def cluster_from_env() -> dict:
    """The parsed ``TF_CONFIG``, checked: a cluster with workers and this task's place in it."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise DistributeError(
            "--strategy multiworker needs TF_CONFIG (start the workers with "
            "tools/launch_workers.py, or see the README)"
        )
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        task = config["task"]
        index = int(task["index"])
        kind = task["type"]
    except (ValueError, KeyError, TypeError) as e:
        raise DistributeError(
            f"TF_CONFIG is not a cluster spec with cluster.worker and task.type/index ({e})"
        ) from None
    size = len(config["cluster"].get(kind, []))
    if kind not in ("worker", "chief") or not 0 <= index < size:
        raise DistributeError(
            f"TF_CONFIG task {kind}:{index} is not in the cluster ({size} {kind} address(es))"
        )
    return {
        "workers": workers,
        "type": kind,
        "index": index,
        "chief": config["cluster"].get("chief", []),
    }


def free_ports(count: int) -> list[int]:
    """``count`` TCP ports free on 127.0.0.1 right now (for local workers)."""
    import socket

    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def local_tf_config(ports: list[int], index: int) -> str:
    """``TF_CONFIG`` of worker ``index`` in a cluster of workers on 127.0.0.1:``ports``."""
    return json.dumps(
        {
            "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
            "task": {"type": "worker", "index": index},
        }
    )


def chief_task() -> bool:
    """Is this process the chief of the ``TF_CONFIG`` cluster (True without one)? Readable
    before any strategy exists, for a CLI's own outputs (tables, figures)."""
    if not os.environ.get("TF_CONFIG"):
        return True
    cluster = cluster_from_env()
    return cluster["type"] == "chief" or (cluster["index"] == 0 and not cluster["chief"])
