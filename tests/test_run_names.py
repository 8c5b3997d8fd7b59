"""Default run names differ when settings differ, folders named by lrbs_tf 0.2.0 are still
found, and a folder that holds another run says which settings differ (pure Python: no
TensorFlow)."""

import os

import pytest

from lrbs_tf import files
from lrbs_tf.probes.settings import ProbeSettings
from lrbs_tf.training import folder
from lrbs_tf.training.config import RunConfig

OLD = "mlp-fashion_mnist-lr0.1-bs100-seed0"  # what lrbs_tf 0.2.0 named all of these


def config(**changes):
    return RunConfig(lr=0.1, batch_size=100, **changes)


def test_runs_differing_in_epochs_train_size_or_width_get_their_own_names(tmp_path):
    logdir = str(tmp_path)
    assert config(logdir=logdir).run_name == OLD  # today's defaults: today's name
    names = {
        config(logdir=logdir, **change).run_name
        for change in ({}, {"epochs": 5}, {"epochs": 6}, {"train_size": 1000}, {"width": 16})
    }
    assert len(names) == 5
    assert config(logdir=logdir, epochs=5, train_size=1000, width=16).run_name == (
        OLD + "-ep5-n1000-w16"
    )
    assert config(logdir=logdir, momentum=0.9, loss_target=0.05).run_name == (
        OLD + "-mom0.9-target0.05"
    )
    assert config(logdir=logdir, epochs=5, name="mine").run_name == "mine"


def old_folder(logdir, run: RunConfig) -> None:
    """A run folder as lrbs_tf 0.2.0 wrote it: no name parts, its config.json under OLD."""
    os.makedirs(os.path.join(logdir, OLD))
    saved = dict(run.to_dict(), run_name=OLD)
    files.write_json(os.path.join(logdir, OLD, "config.json"), {"config": saved})


def test_a_folder_of_the_old_name_is_found_when_it_holds_this_run(tmp_path):
    logdir = str(tmp_path)
    old_folder(logdir, config(logdir=logdir, epochs=5))
    assert config(logdir=logdir, epochs=5).run_name == OLD  # reused, not trained again
    assert config(logdir=logdir, epochs=6).run_name == OLD + "-ep6"  # another run
    os.makedirs(tmp_path / (OLD + "-ep5"))
    assert config(logdir=logdir, epochs=5).run_name == OLD + "-ep5"  # the new one wins


def marked(logdir, run: RunConfig) -> str:
    path = os.path.join(logdir, run.run_name)
    os.makedirs(path)
    files.write_json(os.path.join(path, ".lrbs-run"), {"run_name": run.run_name})
    files.write_json(os.path.join(path, "config.json"), {"config": run.to_dict()})
    return path


def test_a_folder_with_other_settings_names_them(tmp_path):
    logdir = str(tmp_path)
    marked(logdir, config(logdir=logdir, name="run", epochs=1, train_size=500))
    other = config(logdir=logdir, name="run", epochs=2, train_size=600)
    with pytest.raises(folder.RunExistsError) as e:
        folder.inspect(other)
    assert "(--epochs 1 then, 2 now; --train-size 500 then, 600 now)" in str(e.value)
    probed = config(logdir=logdir, name="run", epochs=1, train_size=500, probe=ProbeSettings())
    with pytest.raises(folder.RunExistsError, match=r"--probe off then, on now.*tools/probe.py"):
        folder.inspect(probed)
