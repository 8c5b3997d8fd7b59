"""What a scaling test found, from its branches' records: the floor, each branch judged, k*
per rule, the SVAG result, the predictions beside them, and one verdict line per rule
(:func:`analyse`); the rows of ``scaling.csv`` (:func:`table_rows`). Pure Python and NumPy."""

from __future__ import annotations

from lrbs_tf.scaling.plan import Plan
from lrbs_tf.scaling.verdict import critical_factor, judge, noise_floor, predictions


def analyse(
    plan: Plan, records: dict, start: dict, probe: dict | None, level: float, label: str = "θ0"
) -> dict:
    """The report of a finished test (see the module docstring)."""
    base = [records[b.name] for b in plan.branches if b.kind == "base"]
    losses = {name: [p["loss"] for p in r["points"]] for name, r in records.items()}
    floor = noise_floor([losses[r["name"]] for r in base], level)
    judged = {name: judge(values, floor, start["loss"]) for name, values in losses.items()}
    rules = {rule: rule_result(plan, rule, records, judged) for rule in plan.rules}
    ells = [b for b in plan.branches if b.kind == "svag"]
    svag = {
        "rows": [_row(plan, records[b.name], judged[b.name]) for b in ells],
        "holds": all(judged[b.name]["keeps"] for b in ells) if ells else None,
    }
    predicted = None
    if probe is not None:
        sharpness = {int(s): v for s, v in probe["step_sharpness_by_batch"].items()}
        lrs = {rule: [(r["k"], r["lr"]) for r in rules[rule]["rows"]] for rule in plan.rules}
        predicted = predictions(plan, lrs, sharpness, probe)
    report = {
        "label": label,
        "plan": plan.to_dict(),
        "start": start,
        "floor": floor,
        "base": [_row(plan, r, judged[r["name"]]) for r in base],
        "rules": rules,
        "svag": svag,
        "predictions": predicted,
        "skipped": [list(s) for s in plan.skipped],
    }
    report["verdict"] = [rule_line(plan, rule, report) for rule in plan.rules]
    if ells:
        report["verdict"].append(svag_line(plan, report))
    return report


def rule_result(plan: Plan, rule: str, records: dict, judged: dict) -> dict:
    names = ["base-order0"] + [b.name for b in plan.branches if b.rule == rule]
    rows = [_row(plan, records[n], judged[n]) for n in names]
    for row in rows:
        row["rule"] = rule
    critical = critical_factor([(r["k"], judged[r["name"]]) for r in rows])
    return {"rows": rows, **critical, "s_star": critical["k_star"] * plan.batch0}


def _row(plan: Plan, record: dict, judged: dict) -> dict:
    spec = record["spec"]
    points = record["points"]
    left = judged["left_at"]
    return {
        "name": record["name"],
        "kind": spec["kind"],
        "rule": spec["rule"],
        "k": spec["k"],
        "ell": spec["ell"],
        "order": spec["order"],
        "batch": spec["batch"],
        "lr": spec["lr"],
        "ratio": spec["ratio"],
        "optimizer": spec["optimizer"],
        "steps": record["steps"],
        "loss_after": points[-1]["loss"] if len(points) == len(plan.points) else float("inf"),
        "losses": [p["loss"] for p in points],
        "keeps": judged["keeps"],
        "side": judged["side"],
        "way": judged["way"] if spec["kind"] != "svag" or judged["keeps"] else judged["side"],
        "left_at_examples": None if left is None else plan.points[left],
        "train_seconds": record["train_seconds"],
        "wall_seconds": record["wall_seconds"],
    }


def _span(plan: Plan) -> str:
    epochs = plan.examples / plan.num_train
    return f"{plan.examples} examples ({epochs:.3g} epoch{'s' if epochs != 1 else ''})"


def rule_line(plan: Plan, rule: str, report: dict) -> str:
    """One sentence: how far the rule carries, the first branch outside, the predictions."""
    result, floor = report["rules"][rule], report["floor"]
    k_star, s_star = result["k_star"], result["s_star"]
    if result["first_break"] is None:
        line = (
            f"{rule} scaling holds up to S = {s_star} (k = {k_star}, the largest tried) for "
            f"{_span(plan)} from {report['label']}"
        )
    else:
        row = next(r for r in result["rows"] if r["k"] == result["first_break"])
        held = (
            f"holds up to S = {s_star} (k = {k_star})"
            if k_star > 1
            else f"does not hold even at S = {row['batch']} (k = {row['k']})"
        )
        line = (
            f"{rule} scaling {held} for {_span(plan)} from {report['label']}; at "
            f"S = {row['batch']} the loss after them is {row['loss_after']:.4g} against "
            f"{floor['mean'][-1]:.4g} ± {floor['half_width'][-1]:.2g} ({row['way']}; its "
            f"curve outside the floor from {row['left_at_examples']} examples)"
        )
        if result["back_inside"]:
            line += f"; inside again at k = {', '.join(map(str, result['back_inside']))}"
    return line + predicted_clause(plan, rule, report["predictions"])


def predicted_clause(plan: Plan, rule: str, predicted: dict | None) -> str:
    if predicted is None:
        return ""
    p = predicted["rules"][rule]
    parts = []
    for key, limit in (
        ("stability", predicted["unstable_at"]),
        ("quadratic", predicted["edge_at"]),
    ):
        edge = p[f"edge_batch_{key}"]
        parts.append(
            f"η·λ_step = {limit:g} at S ≈ {edge:.0f}"
            if edge is not None
            else f"η·λ_step < {limit:g} up to S = {p[f'k_star_{key}'] * plan.batch0}"
            if p[f"k_star_{key}"] == plan.factors[-1]
            else f"η·λ_step ≥ {limit:g} already at S = {plan.batch0 * plan.factors[1]}"
        )
    b = predicted["b_simple"]
    se = predicted["b_simple_stderr"]
    parts.append(f"B_simple ≈ {b:.3g} ± {se:.2g}" if b is not None else "no B_simple")
    return "; predicted: " + ", ".join(parts)


def svag_line(plan: Plan, report: dict) -> str:
    rows, ratio, floor = report["svag"]["rows"], plan.lr0 / plan.batch0, report["floor"]
    ells = ", ".join(str(r["ell"]) for r in rows)
    if report["svag"]["holds"]:
        return (
            f"SVAG: ℓ = {ells} end inside the floor after E (compared at equal steps/ℓ) — the "
            f"SDE describes this run at η/S = {ratio:.4g}"
        )
    out = [r for r in rows if not r["keeps"]]
    where = "; ".join(
        f"ℓ = {r['ell']} ends {r['side']} ({r['loss_after']:.4g} against "
        f"{floor['mean'][-1]:.4g} ± {floor['half_width'][-1]:.2g})"
        for r in out
    )
    return (
        f"SVAG: {where} — the SDE does not describe this run at η/S = {ratio:.4g}, so η/S "
        "equivalence cannot be expected even at k = 1"
    )


def table_rows(report: dict) -> list[dict]:
    """One row per branch (base orders, rule branches, SVAG) with the floor after E."""
    floor = report["floor"]
    rows = list(report["base"])
    for result in report["rules"].values():
        rows += [r for r in result["rows"] if r["kind"] == "rule"]
    rows += report["svag"]["rows"]
    keep = (
        "name",
        "kind",
        "rule",
        "k",
        "ell",
        "order",
        "batch",
        "lr",
        "ratio",
        "steps",
        "loss_after",
        "keeps",
        "way",
        "left_at_examples",
        "train_seconds",
        "wall_seconds",
    )
    return [
        dict(
            {k: r[k] for k in keep},
            floor_mean=floor["mean"][-1],
            floor_half_width=floor["half_width"][-1],
        )
        for r in rows
    ]


def quote(report: dict, batch: int) -> list[str]:
    """What a finished test measured at S = ``batch``, one line per rule (for the advisor)."""
    floor = report["floor"]
    against = f"{floor['mean'][-1]:.4g} ± {floor['half_width'][-1]:.2g}"
    lines = []
    for rule, result in report["rules"].items():
        row = next((r for r in result["rows"] if r["batch"] == batch), None)
        head = f"{rule}: k* = {result['k_star']} (S = {result['s_star']})"
        if row is None:
            tried = ", ".join(str(r["batch"]) for r in result["rows"])
            lines.append(f"{head}; S = {batch} was not tried (tried: {tried})")
            continue
        verdict = "inside the floor" if row["keeps"] else f"outside ({row['way']})"
        lines.append(
            f"{head}; at S = {batch}, η = {row['lr']:.4g}: loss after E {row['loss_after']:.4g} "
            f"against {against}, {verdict}"
        )
    return lines
