"""Fig. 2 over seeds (#36): mean, standard deviation and range of each rule's best and final
test accuracy and of its curves' distance to the baseline, from ``fig2.json`` of each seed's
``experiments/fig2_rescaling.py`` run; and each rule's deficit against the baseline, seed by
seed (same seed, same data order and initial weights), against the seed spread.

    python results/fig2-settled/aggregate.py DIR/seed0 DIR/seed1 DIR/seed2 > table.md
"""

import json
import statistics
import sys

KEYS = (
    ("best_test_accuracy", "best test", 100),
    ("final_test_accuracy", "final test", 100),
    ("distance_to_baseline_test", "dist. test", 1),
    ("distance_to_baseline_train", "dist. train", 1),
)


def main() -> None:
    seeds = [json.load(open(f"{d}/fig2.json"))["runs"] for d in sys.argv[1:]]
    rules = [r["setting"] for r in seeds[0]]
    print("| rule | " + " | ".join(f"{name} (mean ± sd, range)" for _, name, _ in KEYS) + " |")
    print("|---" * (len(KEYS) + 1) + "|")
    for i, rule in enumerate(rules):
        cells = []
        for key, _, scale in KEYS:
            values = [runs[i][key] * scale for runs in seeds]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            digits = 2 if scale == 100 else 4
            cells.append(
                f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f} "
                f"({min(values):.{digits}f}–{max(values):.{digits}f})"
            )
        print(f"| {rule} | " + " | ".join(cells) + " |")
    print()
    print("| rule | best-test deficit to the baseline, per seed (points) | mean ± sd |")
    print("|---|---|---|")
    for i, rule in enumerate(rules[1:], start=1):
        best = [(runs[0]["best_test_accuracy"], runs[i]["best_test_accuracy"]) for runs in seeds]
        gaps = [100 * (base - rule_best) for base, rule_best in best]
        sd = statistics.stdev(gaps) if len(gaps) > 1 else 0.0
        per_seed = ", ".join(f"{g:.2f}" for g in gaps)
        print(f"| {rule} | {per_seed} | {statistics.mean(gaps):.2f} ± {sd:.2f} |")


if __name__ == "__main__":
    main()
