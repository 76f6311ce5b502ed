#!/usr/bin/env python3
"""Reference COCO bbox numbers from pycocotools, for tests/eval_coco.rs.

Usage: pycoco_ref.py DIR

Every subdirectory of DIR holding gt.json (COCO instances) and dt.json (COCO
results) is one case. For each, in name order, prints one JSON line:

    {"case": NAME, "stats": [12 numbers],
     "per_category": [{"category_id": ID, "map": AP, "map50": AP50}, ...]}

with every number written as a string holding Python's repr (the shortest
text that reads back as the same double), so that a reader without exact
float parsing (serde_json's default) can still compare bit for bit.

or {"case": NAME, "error": MESSAGE} if pycocotools fails on it. Per-category
AP is the mean of precision[:, :, k, area=all, maxDets=100] over entries > -1
(-1 if none), the way summarize() averages. pycocotools' own progress output
is swallowed so that stdout carries only these lines.
"""

import contextlib
import io
import json
import os
import sys

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def mean_valid(values):
    values = values[values > -1]
    return float(np.mean(values)) if values.size else -1.0


def exact(x):
    return repr(float(x))


def evaluate(case_dir):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(os.path.join(case_dir, "gt.json"))
        dt = gt.loadRes(os.path.join(case_dir, "dt.json"))
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    per_category = [
        {
            "category_id": int(cat_id),
            "map": exact(mean_valid(precision[:, :, k, 0, -1])),
            "map50": exact(mean_valid(precision[0, :, k, 0, -1])),
        }
        for k, cat_id in enumerate(ev.params.catIds)
    ]
    return {"stats": [exact(s) for s in ev.stats], "per_category": per_category}


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: pycoco_ref.py DIR")
    root = sys.argv[1]
    for name in sorted(os.listdir(root)):
        case_dir = os.path.join(root, name)
        if not os.path.isfile(os.path.join(case_dir, "gt.json")):
            continue
        try:
            line = {"case": name, **evaluate(case_dir)}
        except Exception as e:  # report and carry on with the other cases
            line = {"case": name, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
