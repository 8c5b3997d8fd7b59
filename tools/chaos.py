"""Stop a real training run with SIGINT, SIGTERM and SIGKILL all along its life, resume it each
time, and check that nothing is lost.

    python tools/chaos.py --kills 20 --signals INT,TERM,KILL [--seed 0] [--workdir /tmp/x]

1. Runs ``experiments/run.py`` once uninterrupted in ``--deterministic`` mode with a curvature
   probe at the end (the reference), and measures its timeline: start-up, the training steps,
   and the final phase (probe, ``model.keras``, final ``results.json``, removing checkpoints).
2. Starts the same command again in another folder ``--kills`` times and stops it at a
   planned point of that timeline, counted from the moment the command has claimed its run
   folder (in the first ~0.2 s of a process, while Python starts, a signal ends it by its
   default action before anything is written). The points are spread evenly over the whole
   run (stratified at random), so that stops land in start-up, mid-epoch steps, epoch ends,
   checkpoints and the final writes; one in ten is during start-up. A stop aimed at training
   step k waits until the run's checkpoint passes k, then a random part of a checkpoint
   interval; one aimed at the final phase waits for the last checkpoint, then a random part
   of the reference's final phase. A third of the rest aim at an epoch's end: a random moment
   between its last step and the next epoch's first (while the epoch is evaluated, recorded
   and checkpointed), or the instant its epoch line appears (between its record and its
   checkpoint). The signal of each stop is drawn from ``--signals``; SIGINT and SIGTERM must
   end the run with status 130 or 143 after saving its state. After each stop it checks the
   folder: every JSON file parses and has its shape, the checkpoint is complete (its weights
   match the SHA-1 in ``state.json``). The next start resumes from there with the same
   command; the resume point (epoch, batch) of every start is recorded.
3. Lets the last start finish and compares it with the reference: ``model.keras`` itself (every
   member of the archive but its save date), the weights' SHA-1, every per-epoch record, the
   probe, every value in every TensorBoard folder (``train``, ``validation``, ``test``,
   ``probe``), and the console: every epoch line printed by any start (without its seconds)
   equals the reference's line of that epoch, and every epoch has one.

Prints the kills per third of the run, at epoch ends and in the final phase, per signal, the
number of distinct resume points, and ``kill_resume_ok: K/N`` (K kills after which the folder
was consistent and the final run is identical to the reference); exits non-zero unless K = N.
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
import threading
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
EPOCH_STEPS = 12800 // 64
STEPS = 6 * EPOCH_STEPS


class Started(subprocess.Popen):
    """A run in a child process whose stderr lines are collected, with their arrival times, by
    a thread (so that a kill can follow a line as it appears)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lines: list[tuple[float, str]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.stderr:
            self.lines.append((time.time(), line.rstrip("\n")))

    def finish(self) -> int:
        self.wait()
        self.reader.join(timeout=10)
        return self.returncode

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


def _default_sigint():  # a child of a background job inherits SIGINT ignored: undo that
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(logdir, name):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return Started(
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
        preexec_fn=_default_sigint,
    )


def checkpoint_step(run_dir) -> int | None:
    """The optimizer step of the run's last checkpoint (None without one)."""
    try:
        with open(os.path.join(run_dir, "ckpt", "state.json")) as f:
            return int(json.load(f)["iterations"])
    except (OSError, ValueError, KeyError):
        return None


EPOCH_LINE = re.compile(r": epoch (\d+)/\d+: (.*) \([\d.]+ s\)$")


def epoch_lines(text: str) -> dict[int, list[str]]:
    """Epoch number → the epoch lines printed for it (without their seconds)."""
    out: dict[int, list[str]] = {}
    for line in text.splitlines():
        match = EPOCH_LINE.search(line)
        if match:
            out.setdefault(int(match.group(1)), []).append(match.group(2))
    return out


def timeline(logdir) -> dict:
    """Run the reference and measure: start-up (until results.json), seconds per step, the
    final phase (from the last checkpoint to the end), each epoch's tail (from its last step to
    its epoch line), and its console lines."""
    run_dir = os.path.join(logdir, "reference")
    tick = time.time()
    proc = start(logdir, "reference")
    began = last = None
    ends = {}  # epoch -> when the checkpoint reached its last step
    while proc.poll() is None:
        if began is None and os.path.exists(os.path.join(run_dir, "results.json")):
            began = time.time() - tick
        step = checkpoint_step(run_dir) or 0
        if step and step % EPOCH_STEPS == 0:
            ends.setdefault(step // EPOCH_STEPS, time.time())
        if last is None and step == STEPS:
            last = time.time() - tick
        time.sleep(0.01)
    total = time.time() - tick
    if proc.finish() != 0:
        sys.exit(f"chaos.py: the reference run failed: {proc.text().strip().splitlines()[-1:]}")
    lines = {}
    for when, line in proc.lines:
        match = EPOCH_LINE.search(line)
        if match:
            lines.setdefault(int(match.group(1)), when)
    tails = [lines[e] - ends[e] for e in ends if e in lines and lines[e] > ends[e]]
    began, last = began or total / 3, last or total
    return {
        "total": total,
        "startup": began,
        "final": total - last,
        "step": (last - began) / STEPS,
        "tail": max(tails) if tails else 0.5,
        "lines": epoch_lines(proc.text()),
    }


def plan_kills(count: int, clock: dict, rng: random.Random) -> list[tuple]:
    """Kill points spread over the run: ``(kind, step, fraction)`` with kind ``startup``,
    ``step`` (training step ``step``), ``tail`` (the end of the epoch ending at ``step``:
    evaluation, record, checkpoint), ``line`` (the instant the epoch line of the epoch ending
    at ``step`` appears) or ``final``; stratified fractions of the run after start-up
    (training steps, then the final phase, in the reference's proportions)."""
    training = STEPS * clock["step"]
    plan = []
    for i in range(count):
        fraction = (i + rng.random()) / count
        at = fraction * (training + clock["final"])
        draw = rng.random()
        if draw < 0.1:
            plan.append(("startup", None, fraction))
        elif at >= training:
            plan.append(("final", None, fraction))
        else:
            step = max(1, int(at / clock["step"]))
            if draw < 0.43:  # a third of the rest at the nearest epoch end
                end = min(STEPS, EPOCH_STEPS * max(1, round(step / EPOCH_STEPS)))
                plan.append(("tail" if draw < 0.27 else "line", end, fraction))
            else:
                plan.append(("step", step, fraction))
    return plan


def _wait(proc, until) -> None:
    while proc.poll() is None and not until():
        time.sleep(0.005)


def started(proc, run_dir) -> bool:
    """Has the command claimed its run folder (its pid in the lock note)? Before that — the
    first ~0.2 s of the process, while Python starts — SIGINT and SIGTERM end it by their
    default action, before it has written anything, as SIGKILL would."""
    try:
        with open(os.path.join(run_dir, ".lrbs-lock")) as f:
            return f"pid {proc.pid} " in f.read()
    except OSError:
        return False


def kill_at(proc, run_dir, kind, step, clock, rng, signum) -> str:
    """Wait for the planned point of the run, then send ``signum``; returns where it landed."""
    _wait(proc, lambda: started(proc, run_dir))
    if kind == "startup":
        deadline = time.time() + rng.uniform(0, clock["startup"] - 0.3)
        _wait(proc, lambda: time.time() >= deadline)
        where = "during start-up"
    elif kind == "line":
        epoch = step // EPOCH_STEPS
        _wait(proc, lambda: epoch in epoch_lines(proc.text()))
        where = f"as the line of epoch {epoch} appeared"
    else:
        target = STEPS if kind == "final" else step
        _wait(
            proc,
            lambda: (
                (checkpoint_step(run_dir) or 0) >= min(target, STEPS - STEPS % CHECKPOINT_STEPS)
            ),
        )
        longest = {"final": clock["final"], "tail": clock["tail"] + 0.2}
        extra = rng.uniform(0, longest.get(kind, CHECKPOINT_STEPS * clock["step"]))
        deadline = time.time() + extra
        _wait(proc, lambda: time.time() >= deadline)
        if kind == "final":
            where = f"{extra:.2f} s into the final phase"
        elif kind == "tail":
            where = f"{extra:.2f} s after the last step of epoch {step // EPOCH_STEPS}"
        else:
            where = f"near step {step}"
    if proc.poll() is not None:
        return f"finished before the signal (rc {proc.finish()})"
    name = signal.Signals(signum).name
    proc.send_signal(signum)
    try:
        status = proc.finish() if signum == signal.SIGKILL else _wait_exit(proc, 120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.finish()
        return f"{name} {where}: NO EXIT within 120 s"
    expected = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -9}[signum]
    if status != expected:
        tail = proc.text().strip().splitlines()[-1:]
        return f"{name} {where}: UNEXPECTED exit status {status} ({tail})"
    return f"{name} {where}"


def _wait_exit(proc, timeout: float) -> int:
    proc.wait(timeout=timeout)
    return proc.finish()


def folder_consistent(run_dir) -> tuple[bool, str]:
    from lrbs_tf.training import folder as runfolder

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
                runfolder.shaped(os.path.join(run_dir, name), kind)
        status = "none"
        if os.path.exists(os.path.join(run_dir, "results.json")):
            status = runfolder.read_json(os.path.join(run_dir, "results.json"))["status"]
        state_path = os.path.join(run_dir, "ckpt", "state.json")
        if os.path.exists(state_path):
            state = runfolder._checked_state(run_dir, state_path)
            return True, (
                f"status {status}, checkpoint at epoch {state['epoch'] + 1} batch {state['batch']}"
            )
        return status in ("none", "running", "finished"), f"status {status}, no checkpoint"
    except (runfolder.RunFolderError, KeyError, OSError) as e:
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


def _signals(text: str) -> list[int]:
    names = [n.strip().upper().removeprefix("SIG") for n in text.split(",") if n.strip()]
    known = {"INT": signal.SIGINT, "TERM": signal.SIGTERM, "KILL": signal.SIGKILL}
    if not names or any(n not in known for n in names):
        raise argparse.ArgumentTypeError(f"must be a list of INT, TERM, KILL; got {text!r}")
    return [known[n] for n in names]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument(
        "--signals",
        type=_signals,
        default=[signal.SIGKILL],
        help="signals to stop the run with, one drawn per kill (default: KILL)",
    )
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
        f"{STEPS} steps at {1000 * clock['step']:.1f} ms, epoch tail {clock['tail']:.2f} s, "
        f"final phase {clock['final']:.1f} s",
        flush=True,
    )
    run_dir = os.path.join(workdir, "chaos")
    consistent, thirds, points, console = 0, [0, 0, 0], [], []
    kinds: dict[str, int] = {}
    sent: dict[str, int] = {}
    for i, (kind, step, fraction) in enumerate(plan_kills(args.kills, clock, rng)):
        points.append(resume_point(run_dir))
        proc = start(workdir, "chaos")
        signum = rng.choice(args.signals)
        note = kill_at(proc, run_dir, kind, step, clock, rng, signum)
        console.append(proc.text())
        failed = "UNEXPECTED" in note or "NO EXIT" in note
        if not note.startswith("finished") and not failed:
            thirds[min(2, int(3 * fraction))] += 1
            kinds[kind] = kinds.get(kind, 0) + 1
            name = signal.Signals(signum).name
            sent[name] = sent.get(name, 0) + 1
        ok, detail = folder_consistent(run_dir)
        ok = ok and not failed
        consistent += ok
        print(
            f"kill {i + 1:2d}/{args.kills} ({fraction:4.0%} of the run): {note}; "
            f"{'consistent' if ok else 'INCONSISTENT'} ({detail})",
            flush=True,
        )
    points.append(resume_point(run_dir))
    final = start(workdir, "chaos")
    final.finish()
    console.append(final.text())
    if final.returncode != 0:
        print(f"final resume failed: {final.text().strip().splitlines()[-1:]}")
        identical = False
    else:
        got, want = outcome(run_dir), outcome(os.path.join(workdir, "reference"))
        differ = [k for k in want if not k.startswith("_") and got[k] != want[k]]
        printed = epoch_lines("\n".join(console))
        reference = {e: lines[0] for e, lines in clock["lines"].items()}
        if set(printed) != set(reference) or any(
            line != reference[e] for e, lines in printed.items() for line in lines
        ):
            differ.append("console epoch lines")
        identical = not differ
        repeats = sum(len(lines) - 1 for lines in printed.values())
        print(
            f"final run: resumed {got['_resumed']} times; "
            + (
                "model.keras, weights, epochs, probe, every TensorBoard folder and every "
                f"epoch line identical to the reference ({repeats} epoch lines printed again "
                "by a replay after SIGKILL)"
                if identical
                else f"DIFFERENT from the reference: {differ}"
            )
        )
    distinct = len({p for p in points if p is not None})
    print(
        f"kills by third of the run: {thirds[0]} / {thirds[1]} / {thirds[2]}; by kind: "
        + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
        + "; by signal: "
        + ", ".join(f"{k} {v}" for k, v in sorted(sent.items()))
        + f"; distinct resume points: {distinct}"
    )
    ok = consistent if identical else 0
    print(f"kill_resume_ok: {ok}/{args.kills}  ({time.time() - tick:.0f} s, runs in {workdir})")
    sys.exit(0 if ok == args.kills else 1)


if __name__ == "__main__":
    main()
