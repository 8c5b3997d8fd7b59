"""Start a keras-tuner chief and N workers on this machine (127.0.0.1) for a distributed sweep.

    python tools/launch_tuner.py --workers 2 -- experiments/fig3_grid.py --preset quick
    python tools/launch_tuner.py --workers 2 --timeout 3600 -- experiments/tune.py --trials 20

Runs the given script once as the chief (``KERASTUNER_TUNER_ID=chief``: it serves the oracle and
writes the final table) and ``--workers`` times as workers (``tuner0``, ``tuner1``, …: they run
the trials), all with ``KERASTUNER_ORACLE_IP=127.0.0.1`` and a free ``KERASTUNER_ORACLE_PORT``.
The chief starts first; workers wait for its port (``--connect-timeout`` in the scripts) and fail
with a clear message if it never comes up. Every process is bounded by ``--timeout``; output goes
to ``<logdir>/launch/<id>.log``; at the end the chief's results (its table) are shown. Exits
non-zero if any process failed or timed out.

On several machines, run the same script on each with the variables set by hand (one chief,
every worker pointing at the chief's address and port) and a ``--logdir`` on a shared file
system, as keras-tuner's distributed mode documents.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--timeout", type=float, default=3600, help="seconds, per process")
    p.add_argument("--logdir", default="runs/launch", help="folder for the process logs")
    p.add_argument("script", nargs=argparse.REMAINDER, help="-- SCRIPT [ARGS...]")
    args = p.parse_args()
    script = args.script[1:] if args.script[:1] == ["--"] else args.script
    if not script:
        p.error("give the script to run after --")
    if args.workers < 1:
        p.error("--workers must be at least 1")
    os.makedirs(os.path.join(args.logdir, "launch"), exist_ok=True)
    port = free_port()
    base_env = dict(
        os.environ,
        KERASTUNER_ORACLE_IP="127.0.0.1",
        KERASTUNER_ORACLE_PORT=str(port),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    procs = {}
    for tuner_id in ["chief"] + [f"tuner{i}" for i in range(args.workers)]:
        log_path = os.path.join(args.logdir, "launch", f"{tuner_id}.log")
        log = open(log_path, "w")
        procs[tuner_id] = (
            subprocess.Popen(
                [sys.executable, *script],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(base_env, KERASTUNER_TUNER_ID=tuner_id),
            ),
            log,
            log_path,
        )
        print(f"started {tuner_id} (pid {procs[tuner_id][0].pid}), log {log_path}", flush=True)
        if tuner_id == "chief":
            time.sleep(2.0)  # let the chief open its port first
    deadline = time.time() + args.timeout
    failed = []
    for tuner_id, (proc, log, _) in procs.items():
        try:
            proc.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            failed.append(f"{tuner_id} timed out")
        log.close()
        if proc.returncode not in (0, None) and f"{tuner_id} timed out" not in failed:
            failed.append(f"{tuner_id} exited with {proc.returncode}")
        print(f"{tuner_id}: exit {proc.returncode}", flush=True)
    chief_log = procs["chief"][2]
    summary = chief_summary(chief_log)
    if summary:
        print(f"\nthe chief's results (from {chief_log}):\n{summary}", flush=True)
    if failed:
        print("launch_tuner.py: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


def chief_summary(path: str) -> str:
    """The chief's final table and lines: everything after its last progress line (a line
    starting with ``[``), which is what the sweep printed once every trial had ended."""
    try:
        with open(path, errors="replace") as f:
            lines = [line.rstrip("\n") for line in f]
    except OSError:
        return ""
    last = max((i for i, line in enumerate(lines) if line.startswith("[")), default=-1)
    return "\n".join(line for line in lines[last + 1 :] if line.strip())


if __name__ == "__main__":
    sys.exit(main())
