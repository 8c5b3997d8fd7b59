"""Training a figure's runs in turn, with progress and an ETA."""

from __future__ import annotations

import time

from lrbs_tf import distribute


def is_chief(configs) -> bool:
    """Does this process write the figure's outputs (always, but for the non-chief workers of
    a multi-worker run)?"""
    return not any(c.strategy == "multiworker" for c in configs) or distribute.chief_task()


def train_all(labelled_configs, say=lambda line: None, progress: str = "epoch") -> list[dict]:
    """Train (or reuse, or resume) each ``(label, config)`` in turn; ``say`` gets
    ``[i/n] label`` with the elapsed time and an ETA before each run, and a line when it
    ends; ``progress`` as in :func:`lrbs_tf.training.run.train`."""
    from lrbs_tf.training.run import train  # reuses finished runs, resumes killed ones

    results, tick = [], time.time()
    for i, (label, config) in enumerate(labelled_configs):
        elapsed = time.time() - tick
        eta = f", ETA {elapsed / i * (len(labelled_configs) - i) / 60:.1f} min" if i else ""
        say(f"[{i + 1}/{len(labelled_configs)}] {label} (elapsed {elapsed / 60:.1f} min{eta})")
        result = train(config, progress=progress)
        results.append(result)
        say(
            f"      {result['status']} after {len(result['epochs'])} epochs"
            + (
                f", test acc {100 * result['final_test_accuracy']:.2f}%"
                if result.get("final_test_accuracy") is not None
                else ""
            )
        )
    return results
