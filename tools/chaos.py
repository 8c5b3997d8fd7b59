"""Kill a real training run with SIGKILL at random moments, resume it each time, and check that
nothing is lost.

    python tools/chaos.py --kills 20 [--seed 0] [--workdir /tmp/lrbs-chaos]

1. Runs ``experiments/run.py`` once uninterrupted in ``--deterministic`` mode (the reference).
2. Starts the same command again in another folder and, ``--kills`` times, SIGKILLs it at a
   random moment: one kill in five during start-up (before training begins), the others a
   random time after the process has started training (it rewrites ``results.json`` then),
   up to twice the reference's training time divided by the number of kills (at least 3 s,
   enough to pass the first trace and a checkpoint), so the kills
   spread over mid-epoch steps, epoch ends and final writes of one long run. After each kill
   it checks the folder:
   ``config.json`` and ``results.json`` parse, the status is ``running`` (or the run already
   finished), and any checkpoint is complete (its weights match the SHA-1 in ``state.json``).
   The next start resumes from there with the same command.
3. Lets the last start finish and compares with the reference: the weights' SHA-1, every
   per-epoch metric and every per-step TensorBoard value must be identical.

Prints ``kill_resume_ok: K/N`` (K kills after which the folder was consistent and the final
run is identical to the reference) and exits non-zero unless K = N.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

RUN = ["--ratio", "0.05/64", "--train-size", "20000", "--validation-size", "1000", "--epochs",
       "10", "--width", "128", "--deterministic", "--checkpoint-steps", "20"]


def start(logdir, name):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "experiments", "run.py"), *RUN,
                             "--logdir", logdir, "--name", name], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_training(proc, results_path, began) -> float:
    """Seconds after ``began`` at which the process wrote results.json (training starts)."""
    while proc.poll() is None:
        try:
            if os.path.getmtime(results_path) >= began:
                return time.time() - began
        except OSError:
            pass
        time.sleep(0.02)
    return time.time() - began


def folder_consistent(run_dir) -> tuple[bool, str]:
    from lrbs_tf import checkpoint, runio

    if not os.path.exists(run_dir):
        return True, "killed before the folder existed"
    try:
        if os.path.exists(os.path.join(run_dir, "config.json")):
            runio.read_json(os.path.join(run_dir, "config.json"))
        status = "none"
        if os.path.exists(os.path.join(run_dir, "results.json")):
            status = runio.read_json(os.path.join(run_dir, "results.json"))["status"]
        state_path = os.path.join(run_dir, "ckpt", checkpoint.STATE)
        if os.path.exists(state_path):
            state = runio.read_json(state_path)
            weights = os.path.join(run_dir, "ckpt", state["weights_file"])
            if checkpoint._sha1(weights) != state["weights_sha1"]:
                return False, "checkpoint weights do not match state.json"
            return True, f"status {status}, checkpoint at epoch {state['epoch'] + 1} batch " \
                         f"{state['batch']}"
        return status in ("none", "running", "finished"), f"status {status}, no checkpoint"
    except (runio.RunFolderError, KeyError, OSError) as e:
        return False, str(e)


def outcome(run_dir):
    from lrbs_tf.summaries import read_scalars

    results = json.load(open(os.path.join(run_dir, "results.json")))
    epochs = [{k: v for k, v in e.items() if k != "wall_time"} for e in results["epochs"]]
    steps = {t: sorted(v) for t, v in read_scalars(os.path.join(run_dir, "tb", "train")).items()}
    return results.get("weights_sha1"), epochs, steps, results


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", help="where to put the runs (default: a temporary folder)")
    args = p.parse_args()
    if args.kills < 1:
        p.error("--kills must be at least 1")
    rng = random.Random(args.seed)
    workdir = args.workdir or tempfile.mkdtemp(prefix="lrbs-chaos-")
    shutil.rmtree(os.path.join(workdir, "reference"), ignore_errors=True)
    shutil.rmtree(os.path.join(workdir, "chaos"), ignore_errors=True)

    tick = time.time()
    ref = start(workdir, "reference")
    startup = None
    while ref.poll() is None:
        if startup is None and os.path.exists(os.path.join(workdir, "reference", "results.json")):
            startup = time.time() - tick
        time.sleep(0.05)
    err = ref.stderr.read()
    reference_time = time.time() - tick
    if ref.returncode != 0:
        sys.exit(f"chaos.py: the reference run failed: {err.strip().splitlines()[-1:]}")
    startup = startup or reference_time / 2
    window = max(2 * (reference_time - startup) / args.kills, 3.0)
    print(f"reference run: {reference_time:.1f} s ({startup:.1f} s start-up); kills up to "
          f"{window:.1f} s into training", flush=True)
    run_dir = os.path.join(workdir, "chaos")
    consistent = 0
    for i in range(args.kills):
        began = time.time()
        proc = start(workdir, "chaos")
        if rng.random() < 0.2:
            delay, where = rng.uniform(0.5, startup), "during start-up"
        else:
            training = wait_for_training(proc, os.path.join(run_dir, "results.json"), began)
            delay = training + rng.uniform(0.0, window)
            where = f"{delay - training:.1f} s into training"
        try:
            proc.wait(timeout=max(0.0, began + delay - time.time()))
            note = f"finished before the kill (rc {proc.returncode})"
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            note = f"killed {where}"
        ok, detail = folder_consistent(run_dir)
        consistent += ok
        print(f"kill {i + 1:2d}/{args.kills} at {delay:5.1f} s: {note}; "
              f"{'consistent' if ok else 'INCONSISTENT'} ({detail})", flush=True)
    final = start(workdir, "chaos")
    _, err = final.communicate()
    if final.returncode != 0:
        print(f"final resume failed: {err.strip().splitlines()[-1:]}")
        identical = False
    else:
        got, want = outcome(run_dir), outcome(os.path.join(workdir, "reference"))
        identical = got[:3] == want[:3]
        print(f"final run: resumed {got[3].get('resumed')} times; weights "
              f"{'identical' if got[0] == want[0] else 'DIFFERENT'}, per-epoch metrics "
              f"{'identical' if got[1] == want[1] else 'DIFFERENT'}, per-step TensorBoard "
              f"values {'identical' if got[2] == want[2] else 'DIFFERENT'} to the reference")
    ok = consistent if identical else 0
    print(f"kill_resume_ok: {ok}/{args.kills}  ({time.time() - tick:.0f} s, runs in {workdir})")
    sys.exit(0 if ok == args.kills else 1)


if __name__ == "__main__":
    main()
