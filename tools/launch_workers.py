"""Start N MultiWorkerMirroredStrategy workers of one script on this machine (127.0.0.1).

    python tools/launch_workers.py -n 2 -- experiments/run.py --ratio 0.005/640 --train-size 10000

Each worker gets its own free port and ``TF_CONFIG`` (worker 0 is the chief: it writes the run
folder; the others write nothing) and ``--strategy multiworker`` is added to the script's flags.
The chief's output is shown here; every worker's output goes to ``<log-dir>/worker-<i>.log``.
When a worker fails the others are given ``--grace`` seconds to stop on their own (they notice a
lost peer within ``--peer-timeout``), then stopped; ``--timeout`` bounds the whole launch.
Exit status: 0 if every worker finished, else the first failing worker's status.

On several machines, start the same script on each with ``TF_CONFIG`` listing every worker's
``host:port`` and that machine's own index (see the README); this helper is for one machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from lrbs_tf.cli.common import ArgumentParser, fail
from lrbs_tf.distribute.cluster import free_ports, local_tf_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROG = "launch_workers.py"


def main(argv=None) -> int:
    p = ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-n", "--workers", type=int, default=2)
    p.add_argument("--timeout", type=float, default=3600, help="seconds for the whole launch")
    p.add_argument(
        "--grace",
        type=float,
        default=60,
        help="seconds the others get to stop after one worker failed",
    )
    p.add_argument("--log-dir", help="worker logs (default: a new temporary folder)")
    p.add_argument("script", help="the script to run, e.g. experiments/run.py")
    p.add_argument("args", nargs=argparse.REMAINDER, help="its flags (after --)")
    args = p.parse_args(argv)
    if args.workers < 1:
        fail(PROG, f"--workers must be at least 1, got {args.workers}")
    script = args.script if os.path.exists(args.script) else os.path.join(ROOT, args.script)
    if not os.path.exists(script):
        fail(PROG, f"no such script: {args.script}")
    script_args = [a for a in args.args if a != "--"]
    if "--strategy" in script_args:
        fail(PROG, "leave --strategy out: the workers run with --strategy multiworker")
    log_dir = args.log_dir or tempfile.mkdtemp(prefix="lrbs-workers-")
    os.makedirs(log_dir, exist_ok=True)

    ports = free_ports(args.workers)
    procs, logs = [], []
    for i in range(args.workers):
        env = dict(os.environ, TF_CONFIG=local_tf_config(ports, i))
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        log_path = os.path.join(log_dir, f"worker-{i}.log")
        logs.append(log_path)
        out = open(log_path, "w")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-u", script, *script_args, "--strategy", "multiworker"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=os.getcwd(),
            )
        )
        print(f"worker {i}: pid {procs[-1].pid}, 127.0.0.1:{ports[i]}, log {log_path}", flush=True)

    deadline = time.time() + args.timeout
    failed_at = None
    shown = 0
    codes: list[int | None] = [None] * len(procs)
    try:
        while any(c is None for c in codes):
            time.sleep(0.5)
            shown = _follow(logs[0], shown)
            for i, proc in enumerate(procs):
                if codes[i] is None and proc.poll() is not None:
                    codes[i] = proc.returncode
                    if proc.returncode != 0 and failed_at is None:
                        failed_at = time.time()
                        print(
                            f"worker {i} exited with status {proc.returncode}; waiting up to "
                            f"{args.grace:g} s for the others",
                            flush=True,
                        )
            now = time.time()
            if now > deadline or (failed_at is not None and now > failed_at + args.grace):
                why = "timed out" if now > deadline else "did not stop after a peer failed"
                for i, proc in enumerate(procs):
                    if codes[i] is None:
                        proc.kill()
                        codes[i] = proc.wait()
                        print(f"worker {i} {why}: stopped", flush=True)
    except KeyboardInterrupt:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()
        fail(PROG, "interrupted: workers stopped (run the same command to resume)", status=130)
    _follow(logs[0], shown)
    for i, code in enumerate(codes):
        last = _last_line(logs[i])
        print(f"worker {i}: exit status {code}" + (f" — {last}" if code and last else ""))
    bad = [c for c in codes if c]
    return bad[0] if bad else 0


def _follow(path: str, shown: int) -> int:
    """Print what the chief's log gained since ``shown`` bytes; returns the new offset."""
    try:
        with open(path, "rb") as f:
            f.seek(shown)
            chunk = f.read()
    except OSError:
        return shown
    if chunk:
        sys.stdout.write(chunk.decode(errors="replace"))
        sys.stdout.flush()
    return shown + len(chunk)


def _last_line(path: str) -> str:
    try:
        lines = [ln.strip() for ln in open(path, errors="replace") if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


if __name__ == "__main__":
    sys.exit(main())
