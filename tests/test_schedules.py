"""Table-driven tests of schedules, their spec syntax, and training plans."""

import math

import numpy as np
import pytest

from lrbs_tf.cli.run import base_ratio
from lrbs_tf.core import schedules as S
from lrbs_tf.core.plan import make_plan
from lrbs_tf.core.ratio import Ratio, RatioError

TABLE = [
    # spec, [(t, expected value)]
    ("const:0.1", [(0, 0.1), (7.5, 0.1)]),
    ("0.25", [(0, 0.25), (100, 0.25)]),
    ("cyclic:640,128:4", [(0, 640), (3.999, 640), (4, 128), (7.99, 128), (8, 640), (12, 128)]),
    ("cyclic:0.001,0.005:4", [(0, 0.001), (4, 0.005), (8.5, 0.001)]),
    ("cyclic:1,2:0.5", [(0.49, 1), (0.5, 2), (1.0, 1), (1.6, 2)]),
    ("tri:1,3:2", [(0, 1), (1, 2), (2, 3), (3, 2), (4, 1), (5, 2)]),
    (
        "milestones:0.1@60,100,140,180",
        [(0, 0.1), (59.9, 0.1), (60, 0.01), (100, 1e-3), (140, 1e-4), (180, 1e-5), (300, 1e-5)],
    ),
    ("milestones:128@10,20x2", [(0, 128), (10, 256), (25, 512)]),
    ("divide:0.1:25", [(0, 0.1), (24.9, 0.1), (25, 0.05), (50, 0.025), (74, 0.025)]),
    ("divide:1:1:10", [(0, 1), (1, 0.1), (2.5, 0.01)]),
    ("warmup:5:const:0.4", [(0, 0.0), (2.5, 0.2), (5, 0.4), (9, 0.4)]),
    ("warmup:2:cyclic:1,2:1", [(0.5, 0.25), (1.5, 1.5), (2.5, 1)]),
]


@pytest.mark.parametrize("spec,points", TABLE, ids=[t[0] for t in TABLE])
def test_values(spec, points):
    schedule = S.parse_schedule(spec)
    for t, expected in points:
        assert schedule(t) == pytest.approx(expected, rel=1e-12), (spec, t)
    # The canonical spec parses back to the same schedule.
    again = S.parse_schedule(schedule.spec)
    assert [again(t) for t, _ in points] == [schedule(t) for t, _ in points]


@pytest.mark.parametrize(
    "spec,base,t,expected",
    [
        ("milestones:@1,2", 0.5, 1.5, 0.05),
        ("divide::2", 8.0, 4, 2.0),
        ("const:", 3.0, 0, 3.0),
    ],
)
def test_empty_base_takes_the_given_base(spec, base, t, expected):
    assert S.parse_schedule(spec, base=base)(t) == pytest.approx(expected)


@pytest.mark.parametrize(
    "spec,fragment",
    [
        ("cyclic:1,2", "A,B:EPOCHS"),
        ("cyclic:1:4", "A,B:EPOCHS"),
        ("cyclic:1,x:4", "number"),
        ("tri:1,2,3:4", "A,B:EPOCHS"),
        ("milestones:0.1", "BASE@"),
        ("milestones:0.1@20,10", "increase"),
        ("milestones:0.1@10x0", "positive"),
        ("divide:0.1", "BASE:K"),
        ("warmup:5", "EPOCHS:INNER"),
        ("sawtooth:1,2:3", "unknown schedule"),
        ("const:-1", "positive"),
        ("nan", "positive"),
        ("milestones:@10", "number"),
        ("cyclic:1,2:0", "positive"),
    ],
)
def test_bad_specs(spec, fragment):
    with pytest.raises(S.ScheduleError, match=fragment):
        S.parse_schedule(spec)


def test_grow_batch_keeps_ratio():
    lr = S.parse_schedule("milestones:0.1@2,4x0.5")
    lr_const, batch = S.grow_batch_instead(lr, 128)
    for t in (0, 1.9, 2, 3, 4, 10):
        assert lr_const(t) / batch(t) == pytest.approx(lr(t) / 128)
    assert [batch(t) for t in (0, 2, 4)] == [128, 256, 512]


def test_plan_cyclic_batch_constant_lr():
    plan = make_plan(0.005, 640, bs_schedule="cyclic:640,128:4")
    sizes, ratios = plan.epoch(50000, 0)
    assert sizes == [640] * 78 + [80] and ratios == [0.005 / 640] * 79
    sizes, ratios = plan.epoch(50000, 4)
    assert sizes == [128] * 390 + [80] and ratios == [0.005 / 128] * 391


def test_plan_cyclic_lr_matches_cyclic_batch_ratio():
    cbs = make_plan(0.005, 640, bs_schedule="cyclic:640,128:4")
    clr = make_plan(0.001, 128, lr_schedule="cyclic:0.001,0.005:4")
    for epoch in (0, 3, 4, 7, 8):
        assert sorted(set(cbs.epoch(50000, epoch)[1])) == pytest.approx(
            sorted(set(clr.epoch(50000, epoch)[1])), rel=1e-12
        )


def test_plan_stage_boundary_inside_an_epoch():
    # Half-epoch stages: the switch happens at the first batch starting at t >= 0.5.
    plan = make_plan(1.0, 10, bs_schedule="cyclic:10,30:0.5")
    sizes, _ = plan.epoch(100, 0)
    assert sizes == [10, 10, 10, 10, 10, 30, 20]


def test_plan_ratio_schedule_with_batch_schedule():
    plan = make_plan(0.1, 100, bs_schedule="cyclic:100,50:1", ratio_schedule="milestones:@1x0.5")
    sizes, ratios = plan.epoch(200, 1)
    assert sizes == [50] * 4 and ratios == [0.0005] * 4


def test_plan_keep_ratio_and_conflicts():
    plan = make_plan(0.1, 100, bs_schedule="cyclic:100,400:1", keep_ratio=True)
    assert plan.epoch(800, 1) == ([400, 400], [0.001, 0.001])
    for kwargs in (
        dict(lr_schedule="0.1", ratio_schedule="0.001"),
        dict(keep_ratio=True),
        dict(grow_batch=True),
        dict(bs_schedule="10", lr_schedule="0.1", grow_batch=True),
    ):
        with pytest.raises(S.ScheduleError):
            make_plan(0.1, 100, **kwargs)


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        (dict(rescale="linear", base="0.1/50", batch_size="400"), Ratio(0.8, 400)),
        (dict(rescale="none", base="0.1/50", batch_size="400"), Ratio(0.1, 400)),
        (dict(lr="0.005", bs_schedule="cyclic:640,128:4"), Ratio(0.005, 640)),
        (dict(batch_size="128", lr_schedule="cyclic:0.001,0.005:4"), Ratio(0.001, 128)),
        (dict(ratio="0.1/128", lr_schedule="milestones:@60"), Ratio(0.1, 128)),
        (dict(batch_size="100", ratio_schedule="divide:0.001:3"), Ratio(0.1, 100)),
    ],
)
def test_base_ratio(kwargs, expected):
    got = base_ratio(**kwargs)
    assert got.batch_size == expected.batch_size and math.isclose(got.lr, expected.lr)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(rescale="linear", base="0.1/50"),
        dict(rescale="linear", ratio="0.1/50", base="0.1/50", batch_size="4"),
        dict(ratio="1e-4", batch_size="10", lr_schedule="const:0.1"),
        dict(lr_schedule="milestones:@10"),
        dict(lr_schedule="warmup:5:const:0.1"),
    ],
)
def test_base_ratio_conflicts(kwargs):
    with pytest.raises(RatioError):
        base_ratio(**kwargs)


def test_exact_lr_per_step_under_ratio_and_batch_schedules():
    """η = (η/S)(t) × S(t) exactly, read back from a model whose gradient is 1."""
    from lrbs_tf.data.pipeline import EpochData
    from tests.helpers import unit_gradient_model

    plan = make_plan(1e-3, 8, bs_schedule="cyclic:8,3:0.5", ratio_schedule="tri:1e-3,4e-3:0.5")
    model = unit_gradient_model(1e-3)
    n = 29
    data = EpochData(np.ones((n, 1)), np.zeros(n), seed=0)
    kernel = model.layers[-1].kernel
    before = 0.0
    for epoch in range(2):
        sizes, ratios = plan.epoch(n, epoch)
        model.fit(
            data.dataset(sizes, epoch, ratios=ratios),
            initial_epoch=epoch,
            epochs=epoch + 1,
            verbose=0,
            shuffle=False,
        )
        _, rows, _ = model.step_log.drain()
        expected = np.float32(ratios) * np.float32(sizes)
        np.testing.assert_array_equal(rows[:, 1], sizes)
        np.testing.assert_array_equal(rows[:, 2], expected)
        after = float(kernel.numpy()[0, 0])
        assert before - after == pytest.approx(sum(float(e) for e in expected), rel=1e-12)
        before = after
    assert len(set(sizes)) > 1 and len(set(ratios)) > 1
