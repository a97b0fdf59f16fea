"""The choices train.sh makes on the development set, from `vcnode-lab eval`'s eval.json.

Prints the default model kind on the first line (the arm with the best mean rank on ROI PSNR
and ROI SSIM, from per-patient means over the arm's seeds; a tie keeps the arm listed first,
which train.sh makes the paper's SCPA-UNet), then one line per arm: its kind and the seed to
ship (the run with the best mean rank on the same two metrics).
"""
import json
import sys


def ranks(items, value):
    """Rank 0 for the highest value."""
    order = sorted(range(len(items)), key=lambda i: -value(items[i]))
    return {i: r for r, i in enumerate(order)}


def best(items, value_of_metric):
    metrics = ("roi_psnr", "roi_ssim")
    r = [ranks(items, lambda x, m=m: value_of_metric(x, m)) for m in metrics]
    return min(range(len(items)), key=lambda i: (sum(x[i] for x in r), i))


def kind(model_id):
    return model_id.rsplit("-", 1)[0]


arms = [a for a in json.load(open(sys.argv[1]))["arms"] if a["label"] != "copy-LE"]
default = arms[best(arms, lambda a, m: a["per_patient"][m]["mean"])]
print(kind(default["runs"][0]["model_id"]))
for arm in arms:
    runs = arm["runs"]
    run = runs[best(runs, lambda r, m: r["summary"][m]["mean"])]
    print(kind(run["model_id"]), run["seed"])
