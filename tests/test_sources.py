"""Any model, any data (lrbs_tf.data.sources, lrbs_tf.models.sources): an .npz, a folder of
images and a tensorflow-datasets dataset prepared here; a user's builder and a saved .keras
model. Shapes, classes and splits are checked against the generated files; bad inputs must
fail in one line with exit status 2 and write nothing."""

import json
import os

import numpy as np
import pytest

from lrbs_tf.data import sources
from lrbs_tf.data.datasets import load_dataset
from lrbs_tf.data.splits import DataError
from lrbs_tf.models import sources as model_sources
from tests.helpers import ROOT, run_script

USER = os.path.join(ROOT, "tests", "fixtures", "user_models.py")
SHAPE, CLASSES = (8, 8, 1), 3


def _images(n: int, seed: int):
    """Learnable 8×8 grey images: class c lights up row block c."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % CLASSES).astype(np.int64)
    x = rng.integers(0, 60, (n, *SHAPE), dtype=np.uint8)
    for c in range(CLASSES):
        x[y == c, 2 * c : 2 * c + 3] += 180
    return x, y


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("npz") / "shapes.npz"
    (xt, yt), (xs, ys) = _images(400, 0), _images(90, 1)
    np.savez(path, x_train=xt, y_train=yt, x_test=xs, y_test=ys)
    return str(path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """FOLDER/CLASS/i.png, no test split (10 % is carved out)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("folder") / "shapes"
    x, y = _images(150, 2)
    for i, (image, label) in enumerate(zip(x, y)):
        os.makedirs(root / f"class_{label}", exist_ok=True)
        Image.fromarray(image[..., 0]).save(root / f"class_{label}" / f"{i:03d}.png")
    return str(root)


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """A tensorflow-datasets dataset prepared here (no download): tiny_shapes, 60 + 30."""
    import tensorflow_datasets as tfds

    class TinyShapes(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=SHAPE),
                    "label": tfds.features.ClassLabel(num_classes=CLASSES),
                }
            )
            return tfds.core.DatasetInfo(
                builder=self, features=features, supervised_keys=("image", "label")
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(60, 3), "test": self._generate_examples(30, 4)}

        def _generate_examples(self, n, seed):
            x, y = _images(n, seed)
            for i in range(n):
                yield i, {"image": x[i], "label": int(y[i])}

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    TinyShapes(data_dir=data_dir).download_and_prepare()
    return data_dir


def test_npz_shapes_classes_and_splits(npz):
    source = sources.describe(npz)
    assert (source.kind, source.input_shape, source.classes) == ("npz", SHAPE, CLASSES)
    assert (source.train_pool, source.test, source.validation) == (400, 90, 40)
    data = load_dataset(npz, seed=1, validation_size=50)
    assert data.train.x.shape == (350, *SHAPE) and data.train.x.dtype == np.float32
    assert (len(data.validation.y), len(data.test.y)) == (50, 90)
    x, y = _images(90, 1)
    np.testing.assert_allclose(data.test.x, x / np.float32(255))
    np.testing.assert_array_equal(data.test.y, y)
    # the split is the seed's, every example once
    pool = np.concatenate([data.train.x, data.validation.x]).reshape(400, -1)
    xt = _images(400, 0)[0].reshape(400, -1) / np.float32(255)
    assert sorted(map(bytes, pool)) == sorted(map(bytes, xt.astype(np.float32)))
    again = load_dataset(npz, seed=2, validation_size=50)
    assert not np.array_equal(again.validation.x, data.validation.x)


def test_folder_carves_a_fixed_test_split(folder):
    source = sources.describe(folder)
    assert (source.kind, source.input_shape, source.classes) == ("folder", SHAPE, CLASSES)
    assert (source.train_pool, source.test, source.carved_test) == (135, 15, True)
    a, b = load_dataset(folder, seed=0), load_dataset(folder, seed=5)
    np.testing.assert_array_equal(a.test.x, b.test.x)  # the test split ignores the run's seed
    assert a.train.x.shape[1:] == SHAPE and float(a.train.x.max()) <= 1.0
    counts = np.bincount(np.concatenate([a.train.y, a.validation.y, a.test.y]))
    assert counts.tolist() == [50, 50, 50]


def test_tfds_dataset_prepared_locally(tfds_dir):
    source = sources.describe("tfds:tiny_shapes", tfds_dir)
    assert (source.kind, source.input_shape, source.classes) == ("tfds", SHAPE, CLASSES)
    assert (source.train_pool, source.test) == (60, 30)
    data = load_dataset("tfds:tiny_shapes", data_dir=tfds_dir, seed=0, validation_size=10)
    assert (len(data.train.y), len(data.validation.y), len(data.test.y)) == (50, 10, 30)
    x, y = _images(30, 4)
    order = np.lexsort(data.test.x.reshape(30, -1).T)  # tfds shuffles: compare as sets
    mine = np.lexsort((x / np.float32(255)).astype(np.float32).reshape(30, -1).T)
    np.testing.assert_allclose(data.test.x[order], x[mine] / np.float32(255))
    np.testing.assert_array_equal(data.test.y[order], y[mine])


def test_tfds_not_prepared_says_how(tmp_path):
    with pytest.raises(DataError, match="tfds build mnist") as e:
        sources.describe("tfds:mnist", str(tmp_path))
    assert "\n" not in str(e.value)


def _bad_npz(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x_train": np.zeros((4, 2, 2), np.uint8)}, "y_train"),
        ({"x_train": np.zeros((4, 2, 2), np.uint8), "y_train": np.zeros(3, int)}, "4.*3|3.*4"),
        ({"x_train": np.zeros((4, 2, 2), np.uint8), "y_train": np.array([0, 1, -1, 0])}, "label"),
    ],
)
def test_bad_npz_is_one_line(tmp_path, arrays, message):
    with pytest.raises(DataError, match=message) as e:
        sources.describe(_bad_npz(tmp_path, **arrays))
    assert "\n" not in str(e.value)


def test_bad_folders_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    one = tmp_path / "one" / "only_class"
    one.mkdir(parents=True)
    from PIL import Image

    Image.new("L", (4, 4)).save(one / "a.png")
    for path, message in ((tmp_path / "empty", "class"), (tmp_path / "one", "class")):
        with pytest.raises(DataError, match=message) as e:
            sources.describe(str(path))
        assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nosuchmodule_xyz:f", "cannot import nosuchmodule_xyz"),
        (f"{USER}:missing", "no attribute 'missing'"),
        (f"{USER}:NOT_CALLABLE", "not a function"),
        (f"{USER}:no_arguments", "must take"),
        ("resnet", "unknown model"),
        ("nothere.keras", "no such file"),
    ],
)
def test_bad_model_specs_are_one_line(spec, message):
    with pytest.raises(model_sources.ModelError, match=message) as e:
        model_sources.describe(spec)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "name, message",
    [
        ("not_a_model", "not a Keras model"),
        ("raises", "RuntimeError: the user's builder broke"),
        ("one_too_many", "outputs shape \\(4,\\), the data has 3 classes"),
        ("softmax_end", "softmax"),
    ],
)
def test_a_bad_builder_is_refused_in_one_line(npz, tmp_path, name, message):
    from lrbs_tf.models.registry import check_user_model
    from lrbs_tf.training.config import RunConfig

    config = RunConfig(
        lr=0.1, batch_size=50, dataset=npz, model=f"{USER}:{name}", logdir=str(tmp_path)
    )
    with pytest.raises(model_sources.ModelError, match=message) as e:
        check_user_model(config.validate())
    assert "\n" not in str(e.value)


def test_run_refuses_a_bad_builder_before_writing(npz, tmp_path):
    logdir = tmp_path / "logs"
    proc = run_script(
        "experiments/run.py", "--ratio", "0.1/50", "--epochs", "1", "--dataset", npz,
        "--model", f"{USER}:raises", "--logdir", logdir,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "RuntimeError: the user's builder broke" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not logdir.exists() or not any(logdir.iterdir())


def test_width_refused_for_a_builder_without_it(npz, tmp_path):
    from lrbs_tf.settings import ConfigError
    from lrbs_tf.training.config import RunConfig

    config = RunConfig(
        lr=0.1, batch_size=50, dataset=npz, model=f"{USER}:tiny", width=4, logdir=str(tmp_path)
    )
    with pytest.raises(ConfigError, match="width"):
        config.validate()


def _run(*args):
    return run_script("experiments/run.py", "--ratio", "0.1/50", "--seed", "0", *args)


def test_builder_run_records_its_source_and_probes(npz, tmp_path):
    """A user's builder with a custom layer on an .npz: trains, records the builder's path and
    digest and the data source, and probe.py loads the saved model (custom layer included)."""
    proc = _run("--epochs", "2", "--dataset", npz, "--model", f"{USER}:tiny", "--logdir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert run_dir.name == "tiny-shapes-lr0.1-bs50-seed0-ep2"
    config = json.loads((run_dir / "config.json").read_text())
    source = config["config"]["model_source"]
    assert source["kind"] == "builder" and source["import"] == f"{USER}:tiny"
    assert source["sha256"] == model_sources.sha256_of(USER)
    assert config["data"]["data_source"] == config["config"]["data_source"]
    assert config["data"]["data_source"]["kind"] == "npz"
    assert config["data"]["data_source"]["classes"] == 3
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "finished" and results["final_validation_accuracy"] > 0.6
    from tests.fixtures.user_models import tiny

    by_hand = tiny(SHAPE, CLASSES).count_params()
    assert results["model"] == config["model"]
    assert results["model"]["parameters"] == by_hand and results["model"]["options"] == {}
    assert results.get("measured_model") is None  # a model that trained as it is measured
    probe = run_script("tools/probe.py", run_dir, "--examples", "100", "--noise-examples", "50")
    assert probe.returncode == 0, probe.stderr
    assert json.loads((run_dir / "probe.json").read_text())["lambda_max"] > 0


def test_keras_file_is_the_start_and_a_changed_file_is_refused(folder, tmp_path):
    """--model FILE.keras starts from the file's weights: at η = 1e-12 (no BatchNorm) the run
    ends at the file's training-set loss; the same command after the file changed is refused
    in one line."""
    import keras

    from lrbs_tf.data.datasets import load_for
    from lrbs_tf.training.evaluation import DatasetLoss

    def plain(seed):
        keras.utils.set_random_seed(seed)
        return keras.Sequential(
            [keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(8, "relu"),
             keras.layers.Dense(CLASSES)]
        )  # fmt: skip

    model, path, logs = plain(3), tmp_path / "mine.keras", tmp_path / "logs"
    model.save(path)
    args = ("--ratio", "1e-12/50", "--dataset", folder, "--model", path, "--logdir", logs)
    proc = run_script("experiments/run.py", "--epochs", "1", *args)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = [p for p in logs.iterdir() if p.is_dir()]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["model_source"]["sha256"] == model_sources.sha256_of(str(path))
    data = load_for(config["config"])
    start = DatasetLoss(model, data.train.x, data.train.y)()["loss"]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["final_weights_loss"] == pytest.approx(start, rel=1e-5)
    plain(4).save(path)  # the file changes: the same command no longer names the same run
    again = run_script("experiments/run.py", "--epochs", "1", *args)
    assert again.returncode == 2 and "changed" in again.stderr, again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_random_direction_is_filter_normalised_for_convolutions():
    """A conv kernel (3, 3, C, F): each of the F filters of the direction has that filter's norm
    (np.linalg.norm takes two axes at most: this failed on every convolutional model)."""
    import keras

    from lrbs_tf.probes.landscape import filter_normalized_direction

    model = keras.Sequential(
        [keras.Input((6, 6, 2)), keras.layers.Conv2D(4, 3), keras.layers.Flatten(),
         keras.layers.Dense(CLASSES)]
    )  # fmt: skip
    direction = filter_normalized_direction(model, np.random.default_rng(0))
    kernel, d = model.weights[0].numpy(), direction[0]
    for f in range(4):
        assert np.linalg.norm(d[..., f]) == pytest.approx(np.linalg.norm(kernel[..., f]), 1e-5)
    assert not np.any(direction[1])  # the bias: zero
    dense = model.weights[2].numpy()
    np.testing.assert_allclose(
        np.linalg.norm(direction[2], axis=0), np.linalg.norm(dense, axis=0), 1e-5
    )


@pytest.mark.slow  # the sweeps' run loop is the run's, tested here on a user's model
def test_tune_and_the_fig3_grid_take_a_users_model_and_data(npz, tmp_path):
    """keras-tuner's RatioHyperModel on a user's builder, and a 2-point Fig. 3 grid, probed."""
    user = ("--model", f"{USER}:tiny_bn", "--width", "8", "--dataset", npz)
    tune = run_script(
        "experiments/tune.py", *user, "--trials", "2", "--epochs", "1", "--batch-sizes", "25,50",
        "--logdir", tmp_path / "tune",
    )  # fmt: skip
    assert tune.returncode == 0, tune.stderr
    best = json.loads((tmp_path / "tune" / "best.json").read_text())
    trial = json.loads(open(os.path.join(best["run_dir"], "config.json")).read())
    assert trial["config"]["model_source"]["import"] == f"{USER}:tiny_bn"
    assert trial["data"]["data_source"]["kind"] == "npz"
    grid = run_script(
        "experiments/fig3_grid.py", *user, "--lrs", "0.05,0.1", "--batch-sizes", "50",
        "--epochs", "2", "--no-loss-target", "--probe-examples", "100",
        "--probe-noise-examples", "50", "--logdir", tmp_path / "fig3",
    )  # fmt: skip
    assert grid.returncode == 0, grid.stderr
    report = json.loads((tmp_path / "fig3" / "fig3.json").read_text())
    assert len(report["runs"]) == 2 and all(r["lambda_max"] > 0 for r in report["runs"])
    assert (tmp_path / "fig3" / "fig3.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    "kind", ["builder", pytest.param("keras", marks=pytest.mark.slow)]
)  # a .keras start's digest: test_keras_file_is_the_start_and_a_changed_file_is_refused
def test_a_users_model_resumes_after_a_kill_only_on_its_data(tmp_path, kind):
    """A user's builder (or .keras file) on an .npz, SIGKILLed in epoch 2, resumes and
    finishes; with one pixel of the file changed in between, the resume is refused in one line
    (the recorded fingerprints differ) and goes on once the file is restored."""
    import signal

    path = tmp_path / "data.npz"
    x, y = _images(400, 0)
    np.savez(path, x_train=x, y_train=y)
    model = f"{USER}:tiny_bn"
    if kind == "keras":
        from tests.fixtures import user_models

        model = str(tmp_path / "start.keras")
        user_models.tiny_bn(SHAPE, CLASSES).save(model)
    driver = os.path.join("tests", "drivers", "kill_during_training.py")
    args = (driver, tmp_path, "run", 0, "--dataset", path, "--model", model)
    killed = run_script(*args, "--kill-step", "7", timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-1500:]
    if kind == "builder":
        x2 = x.copy()
        x2[0, 0, 0, 0] ^= 1
        np.savez(path, x_train=x2, y_train=y)
        refused = run_script(*args, timeout=300)
        assert refused.returncode != 0, refused.stderr
        assert "data changed since the run started" in refused.stderr, refused.stderr
        np.savez(path, x_train=x, y_train=y)
    resumed = run_script(*args, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-1500:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "finished" and results["resumed"] == 1
    assert len(results["epochs"]) == 3


@pytest.mark.parametrize("given", [None, 16])
def test_a_builder_keeps_its_own_defaults_unless_a_flag_sets_them(npz, given):
    """``--width`` reaches a builder only when given: the built model is the builder's own
    (``tiny_bn(width=8)``, ``user_models.wide(width=5, depth=2)``), parameter for parameter."""
    from lrbs_tf.models.registry import build_for
    from lrbs_tf.models.sources import options
    from lrbs_tf.training.config import RunConfig
    from tests.fixtures import user_models

    for name, default in (("tiny_bn", {"width": 8}), ("wide", {"width": 5, "depth": 2})):
        config = RunConfig(
            lr=0.1, batch_size=50, model=f"{USER}:{name}", dataset=str(npz), width=given
        ).validate()
        by_hand = getattr(user_models, name)(
            SHAPE, CLASSES, **(default | ({"width": given} if given else {}))
        )
        assert build_for(config).count_params() == by_hand.count_params()
        assert options(config) == ({"width": given} if given else {})
        assert config.to_dict()["width"] == given


def test_a_model_measured_unlike_it_trained_is_named_with_its_likely_cause(npz, tmp_path):
    """BatchNorm at Keras' momentum 0.99 after 16 steps on inputs far from 0: the
    inference-mode model (what the probes measure) is not the one SGD trained; the summary
    and results.json say so with the likely cause."""
    with np.load(npz) as arrays:
        shifted = {k: (v / 255 * 4 + 20).astype(np.float32) if k.startswith("x") else v
                   for k, v in arrays.items()}  # fmt: skip
    np.savez(tmp_path / "shifted.npz", **shifted)
    proc = _run("--epochs", "2", "--dataset", tmp_path / "shifted.npz", "--model",
                f"{USER}:tiny_bn", "--logdir", tmp_path / "logs")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run_dir,) = (tmp_path / "logs").iterdir()
    warning = json.loads((run_dir / "results.json").read_text())["measured_model"]
    assert "not the model SGD trained" in warning and "momentum 0.99" in warning
    assert "after 16 steps" in warning and f"warning    {warning}" in proc.stdout


def test_the_likely_cause_fits_the_momentum():
    """Keras' 0.99 averages over ~100 steps: use 0.9; at 0.9 after 33 steps the average had
    time, and the advice is not to use the momentum already used."""
    from lrbs_tf.training.results import _likely_cause

    assert "use momentum 0.9" in _likely_cause({"momentum": 0.99, "steps": 16})
    at_09 = _likely_cause({"momentum": 0.9, "steps": 33})
    assert "use momentum" not in at_09 and "--bn batch" in at_09 and "about 10 steps" in at_09
