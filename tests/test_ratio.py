import math

import pytest

from lrbs_tf.core.ratio import Ratio, RatioError, parse_ratio, rescale_lr, resolve_ratio


@pytest.mark.parametrize(
    "text,batch,lr,bs",
    [
        ("0.005/640", None, 0.005, 640),
        (" 0.005 / 640 ", None, 0.005, 640),
        ("5e-3/640", None, 0.005, 640),
        ("0.1/100", None, 0.1, 100),
        ("7.8125e-6", 640, 0.005, 640),
        ("7.8125e-6", "640", 0.005, 640),
        ("0.001", 1, 0.001, 1),
        ("0.005/640.0", None, 0.005, 640),
    ],
)
def test_parse_valid(text, batch, lr, bs):
    r = parse_ratio(text, batch)
    assert r.batch_size == bs and isinstance(r.batch_size, int)
    assert math.isclose(r.lr, lr, rel_tol=1e-12)
    assert math.isclose(r.value, lr / bs, rel_tol=1e-12)


def test_value_of_default_example():
    assert parse_ratio("0.005/640").value == 7.8125e-6


@pytest.mark.parametrize(
    "text,batch,fragment",
    [
        ("abc/640", None, "number"),
        ("0.005/abc", None, "number"),
        ("", None, "number"),
        ("0/640", None, "positive"),
        ("-0.1/640", None, "positive"),
        ("0.1/0", None, "positive"),
        ("0.1/-5", None, "positive"),
        ("0.1/64.5", None, "whole"),
        ("nan/640", None, "finite"),
        ("0.1/inf", None, "finite"),
        ("inf", 10, "finite"),
        ("nan", 10, "finite"),
        ("0.1/64/2", None, "too many"),
        ("1e-4", None, "needs --batch-size"),
        ("0.1/100", 100, "drop --batch-size"),
        ("1e-4", 0, "positive"),
        ("1e-4", "12.5", "whole"),
        ("-1e-4", 10, "positive"),
    ],
)
def test_parse_invalid(text, batch, fragment):
    with pytest.raises(RatioError, match=fragment):
        parse_ratio(text, batch)


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        (dict(ratio="0.1/100", lr="0.1"), "not both"),
        (dict(lr="0.1"), "needs --batch-size"),
        (dict(batch_size="100"), "needs --lr"),
        (dict(), "give --ratio"),
        (dict(lr="x", batch_size="10"), "number"),
    ],
)
def test_resolve_invalid(kwargs, fragment):
    with pytest.raises(RatioError, match=fragment):
        resolve_ratio(**kwargs)


def test_resolve_lr_and_batch():
    assert resolve_ratio(lr="0.1", batch_size="100") == Ratio(0.1, 100)


@pytest.mark.parametrize(
    "rule,lr",
    [
        ("linear", 0.8),
        ("sqrt", 0.1 * math.sqrt(8)),
        ("none", 0.1),
        ("2", 6.4),
        ("0.5", 0.1 * math.sqrt(8)),
    ],
)
def test_rescale(rule, lr):
    r = rescale_lr(Ratio(0.1, 50), 400, rule)
    assert r.batch_size == 400 and math.isclose(r.lr, lr, rel_tol=1e-12)


def test_rescale_linear_keeps_ratio():
    base = Ratio(0.1, 50)
    assert math.isclose(rescale_lr(base, 1000).value, base.value, rel_tol=1e-12)


@pytest.mark.parametrize("rule", ["cubic", "nan", ""])
def test_rescale_bad_rule(rule):
    with pytest.raises(RatioError):
        rescale_lr(Ratio(0.1, 50), 400, rule)
