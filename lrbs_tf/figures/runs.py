"""Training a figure's runs in turn, with progress and an ETA."""

from __future__ import annotations

import time

from lrbs_tf import distribute


def is_chief(configs) -> bool:
    """Does this process write the figure's outputs (always, but for the non-chief workers of
    a multi-worker run)?"""
    return not any(c.strategy == "multiworker" for c in configs) or distribute.chief_task()


def train_all(labelled_configs, say=lambda line: None) -> list[dict]:
    """Train (or reuse, or resume) each ``(label, config)`` in turn; ``say`` gets
    ``[i/n] label`` with the elapsed time and an ETA before each run."""
    from lrbs_tf.training.run import train  # reuses finished runs, resumes killed ones

    results, tick = [], time.time()
    for i, (label, config) in enumerate(labelled_configs):
        elapsed = time.time() - tick
        eta = f", ETA {elapsed / i * (len(labelled_configs) - i) / 60:.1f} min" if i else ""
        say(f"[{i + 1}/{len(labelled_configs)}] {label} (elapsed {elapsed / 60:.1f} min{eta})")
        results.append(train(config))
    return results
