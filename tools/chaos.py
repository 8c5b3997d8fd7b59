"""Kill a real training run with SIGKILL all along its life, resume it each time, and check that
nothing is lost.

    python tools/chaos.py --kills 20 [--seed 0] [--workdir /tmp/lrbs-chaos]

1. Runs ``experiments/run.py`` once uninterrupted in ``--deterministic`` mode with a curvature
   probe at the end (the reference), and measures its timeline: start-up, the training steps,
   and the final phase (probe, ``model.keras``, final ``results.json``, removing checkpoints).
2. Starts the same command again in another folder ``--kills`` times and SIGKILLs it at a
   planned point of that timeline: the points are spread evenly over the whole run (stratified
   at random), so that kills land in start-up, mid-epoch steps, epoch ends, checkpoints and the
   final writes; one in ten kills is during start-up. A kill aimed at training step k waits
   until the run's checkpoint passes k, then a random part of a checkpoint interval; a kill
   aimed at the final phase waits for the last checkpoint, then a random part of the
   reference's final phase. After each kill it checks the folder: every JSON file parses and
   has its shape, the checkpoint is complete (its weights match the SHA-1 in ``state.json``).
   The next start resumes from there with the same command; the resume point (epoch, batch)
   of every start is recorded.
3. Lets the last start finish and compares it with the reference: ``model.keras`` itself (every
   member of the archive but its save date), the weights' SHA-1, every per-epoch record, the
   probe, and every value in every TensorBoard folder (``train``, ``validation``, ``test``,
   ``probe``).

Prints the kills per third of the run and in the final phase, the number of distinct resume
points, and ``kill_resume_ok: K/N`` (K kills after which the folder was consistent and the
final run is identical to the reference); exits non-zero unless K = N.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHECKPOINT_STEPS = 20
RUN = [
    "--ratio",
    "0.05/64",
    "--train-size",
    "12800",
    "--validation-size",
    "1000",
    "--epochs",
    "6",
    "--width",
    "128",
    "--deterministic",
    "--checkpoint-steps",
    str(CHECKPOINT_STEPS),
    "--probe",
    "--probe-examples",
    "1000",
    "--probe-noise-examples",
    "200",
]
STEPS = 6 * 12800 // 64


def start(logdir, name):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen(
        [
            sys.executable,
            os.path.join(ROOT, "experiments", "run.py"),
            *RUN,
            "--logdir",
            logdir,
            "--name",
            name,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def checkpoint_step(run_dir) -> int | None:
    """The optimizer step of the run's last checkpoint (None without one)."""
    try:
        with open(os.path.join(run_dir, "ckpt", "state.json")) as f:
            return int(json.load(f)["iterations"])
    except (OSError, ValueError, KeyError):
        return None


def timeline(logdir) -> dict:
    """Run the reference and measure: start-up (until results.json), seconds per step, and the
    final phase (from the last checkpoint to the end)."""
    run_dir = os.path.join(logdir, "reference")
    tick = time.time()
    proc = start(logdir, "reference")
    began = last = None
    while proc.poll() is None:
        if began is None and os.path.exists(os.path.join(run_dir, "results.json")):
            began = time.time() - tick
        if last is None and checkpoint_step(run_dir) == STEPS:
            last = time.time() - tick
        time.sleep(0.01)
    total = time.time() - tick
    err = proc.stderr.read()
    if proc.returncode != 0:
        sys.exit(f"chaos.py: the reference run failed: {err.strip().splitlines()[-1:]}")
    began, last = began or total / 3, last or total
    return {"total": total, "startup": began, "final": total - last, "step": (last - began) / STEPS}


def plan_kills(count: int, clock: dict, rng: random.Random) -> list[tuple]:
    """Kill points spread over the run: ``(kind, step, fraction)`` with kind ``startup``,
    ``step`` (training step ``step``) or ``final``; stratified fractions of the run after
    start-up (training steps, then the final phase, in the reference's proportions)."""
    training = STEPS * clock["step"]
    plan = []
    for i in range(count):
        fraction = (i + rng.random()) / count
        at = fraction * (training + clock["final"])
        if rng.random() < 0.1:
            plan.append(("startup", None, fraction))
        elif at >= training:
            plan.append(("final", None, fraction))
        else:
            plan.append(("step", max(1, int(at / clock["step"])), fraction))
    return plan


def kill_at(proc, run_dir, kind, step, clock, rng) -> str:
    """Wait for the planned point of the run, then SIGKILL; returns where it landed."""
    tick = time.time()
    if kind == "startup":
        deadline = tick + rng.uniform(0.3, clock["startup"])
        while proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        where = "during start-up"
    else:
        target = STEPS if kind == "final" else step
        while proc.poll() is None and (checkpoint_step(run_dir) or 0) < min(
            target, STEPS - STEPS % CHECKPOINT_STEPS
        ):
            time.sleep(0.005)
        extra = (
            rng.uniform(0, clock["final"])
            if kind == "final"
            else rng.uniform(0, CHECKPOINT_STEPS * clock["step"])
        )
        deadline = time.time() + extra
        while proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        where = f"{extra:.2f} s into the final phase" if kind == "final" else f"near step {step}"
    if proc.poll() is not None:
        return f"finished before the kill (rc {proc.returncode})"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return f"killed {where}"


def folder_consistent(run_dir) -> tuple[bool, str]:
    from lrbs_tf.training import runfolder, runio

    if not os.path.exists(run_dir):
        return True, "killed before the folder existed"
    try:
        for name, kind in (
            ("config.json", "config"),
            ("results.json", "results"),
            ("ckpt/state.json", "state"),
            ("tb/written.json", "marks"),
        ):
            if os.path.exists(os.path.join(run_dir, name)):
                runio.shaped(os.path.join(run_dir, name), kind)
        status = "none"
        if os.path.exists(os.path.join(run_dir, "results.json")):
            status = runio.read_json(os.path.join(run_dir, "results.json"))["status"]
        state_path = os.path.join(run_dir, "ckpt", "state.json")
        if os.path.exists(state_path):
            state = runfolder._checked_state(run_dir, state_path)
            return True, (
                f"status {status}, checkpoint at epoch {state['epoch'] + 1} batch {state['batch']}"
            )
        return status in ("none", "running", "finished"), f"status {status}, no checkpoint"
    except (runio.RunFolderError, KeyError, OSError) as e:
        return False, str(e)


def resume_point(run_dir):
    try:
        with open(os.path.join(run_dir, "ckpt", "state.json")) as f:
            state = json.load(f)
        return state["epoch"], state["batch"]
    except (OSError, ValueError, KeyError):
        return None


def canonical_ids(config: bytes) -> bytes:
    """Keras names objects shared between layers by their Python ``id()``, which differs from one
    process to the next; number them in order of first appearance instead."""
    ids: dict[bytes, bytes] = {}

    def number(match):
        return b'"shared_object_id": ' + ids.setdefault(match.group(1), b"%d" % len(ids))

    return re.sub(rb'"shared_object_id": (\d+)', number, config)


def outcome(run_dir) -> dict:
    """Everything that must be identical to the reference."""
    from lrbs_tf.training.tensorboard import read_scalars

    results = json.load(open(os.path.join(run_dir, "results.json")))
    with zipfile.ZipFile(os.path.join(run_dir, "model.keras")) as archive:
        model = {
            name: archive.read(name) for name in archive.namelist() if name != "metadata.json"
        }  # metadata.json holds the date it was saved
    model["config.json"] = canonical_ids(model["config.json"])
    probe = {k: v for k, v in (results.get("probe") or {}).items() if k != "seconds"}
    tb = {
        split: {
            tag: sorted(values)
            for tag, values in read_scalars(os.path.join(run_dir, "tb", split)).items()
            if not tag.endswith("seconds")  # how long the probe took: a clock, not a result
        }
        for split in ("train", "validation", "test", "probe")
    }
    return {
        "model.keras": model,
        "weights_sha1": results.get("weights_sha1"),
        "epochs": [{k: v for k, v in e.items() if k != "wall_time"} for e in results["epochs"]],
        "probe": probe,
        **{f"tb/{k}": v for k, v in tb.items()},
        "_resumed": results.get("resumed"),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", help="where to put the runs (default: a temporary folder)")
    args = p.parse_args()

    from lrbs_tf.cli.common import quiet_tensorflow

    quiet_tensorflow()  # TensorFlow's start-up lines out of the output
    if args.kills < 1:
        p.error("--kills must be at least 1")
    rng = random.Random(args.seed)
    workdir = args.workdir or tempfile.mkdtemp(prefix="lrbs-chaos-")
    shutil.rmtree(os.path.join(workdir, "reference"), ignore_errors=True)
    shutil.rmtree(os.path.join(workdir, "chaos"), ignore_errors=True)
    tick = time.time()
    clock = timeline(workdir)
    print(
        f"reference run: {clock['total']:.1f} s: start-up {clock['startup']:.1f} s, "
        f"{STEPS} steps at {1000 * clock['step']:.1f} ms, final phase {clock['final']:.1f} s",
        flush=True,
    )
    run_dir = os.path.join(workdir, "chaos")
    consistent, thirds, final_kills, points = 0, [0, 0, 0], 0, []
    for i, (kind, step, fraction) in enumerate(plan_kills(args.kills, clock, rng)):
        points.append(resume_point(run_dir))
        proc = start(workdir, "chaos")
        note = kill_at(proc, run_dir, kind, step, clock, rng)
        if note.startswith("killed"):
            thirds[min(2, int(3 * fraction))] += 1
            final_kills += kind == "final"
        ok, detail = folder_consistent(run_dir)
        consistent += ok
        print(
            f"kill {i + 1:2d}/{args.kills} ({fraction:4.0%} of the run): {note}; "
            f"{'consistent' if ok else 'INCONSISTENT'} ({detail})",
            flush=True,
        )
    points.append(resume_point(run_dir))
    final = start(workdir, "chaos")
    _, err = final.communicate()
    if final.returncode != 0:
        print(f"final resume failed: {err.strip().splitlines()[-1:]}")
        identical = False
    else:
        got, want = outcome(run_dir), outcome(os.path.join(workdir, "reference"))
        differ = [k for k in want if not k.startswith("_") and got[k] != want[k]]
        identical = not differ
        print(
            f"final run: resumed {got['_resumed']} times; "
            + (
                "model.keras, weights, epochs, probe and every TensorBoard folder identical to "
                "the reference"
                if identical
                else f"DIFFERENT from the reference: {differ}"
            )
        )
    distinct = len({p for p in points if p is not None})
    print(
        f"kills by third of the run: {thirds[0]} / {thirds[1]} / {thirds[2]} "
        f"({final_kills} in the final phase); distinct resume points: {distinct}"
    )
    ok = consistent if identical else 0
    print(f"kill_resume_ok: {ok}/{args.kills}  ({time.time() - tick:.0f} s, runs in {workdir})")
    sys.exit(0 if ok == args.kills else 1)


if __name__ == "__main__":
    main()
