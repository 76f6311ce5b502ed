#!/usr/bin/env python3
"""Compares two runs of `irdistill detect` (one JSON line per image) on the
same images: the host build (reference) against a cross build run under
qemu. Same images, the same image sizes, and per image every detection of
one run matched by one of the other with the same label, its box within
--box-tol pixels on every corner and its score within --score-tol. Prints
every difference and the largest ones; exits 1 on any failure.

Detections are matched per label, greedily by the largest corner distance,
not by position in the list: two detections whose scores differ by less
than the float noise between x86 and ARM kernels may swap places.

With --conf (the threshold both runs used), a detection that only one run
has is forgiven when its score is within --score-tol of the threshold: the
other run's score for it may have fallen just below. Anything else unmatched
is a failure.

usage: compare_detections.py REFERENCE.jsonl OTHER.jsonl
           [--box-tol PX] [--score-tol S] [--conf C]
"""
import argparse
import json
import os
import sys


def load(path):
    out = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: not JSON ({e}): {line[:120]}")
            # The two runs may see the images through different paths.
            out[os.path.basename(rec["image"])] = rec
    return out


def corner_dist(a, b):
    return max(abs(x - y) for x, y in zip(a["box"], b["box"]))


def fmt(d):
    box = ", ".join(f"{v:.2f}" for v in d["box"])
    return f"{d['label']} {d['score']:.4f} [{box}]"


def compare_image(ref, oth, box_tol, score_tol, conf):
    """Returns (errors, notes, matched, worst box Δ, worst score Δ)."""
    errors, notes = [], []
    if (ref["width"], ref["height"]) != (oth["width"], oth["height"]):
        errors.append(f"size {ref['width']}x{ref['height']} vs {oth['width']}x{oth['height']}")
    worst_box = worst_score = 0.0
    matched = 0
    unmatched = list(oth["detections"])
    only_ref = []
    # Highest scores first: they are the least likely to be ambiguous.
    for r in sorted(ref["detections"], key=lambda d: -d["score"]):
        cands = [o for o in unmatched if o["label"] == r["label"]]
        if not cands:
            only_ref.append(r)
            continue
        o = min(cands, key=lambda o: corner_dist(r, o))
        unmatched.remove(o)
        matched += 1
        db, ds = corner_dist(r, o), abs(r["score"] - o["score"])
        worst_box, worst_score = max(worst_box, db), max(worst_score, ds)
        if db > box_tol or ds > score_tol:
            errors.append(f"{fmt(r)}\n      vs {fmt(o)}  (box Δ {db:.3f} px, score Δ {ds:.5f})")
    for side, dets in (("reference", only_ref), ("other", unmatched)):
        for d in dets:
            if conf is not None and d["score"] < conf + score_tol:
                notes.append(f"only in {side}, at the threshold: {fmt(d)}")
            else:
                errors.append(f"only in {side}: {fmt(d)}")
    return errors, notes, matched, worst_box, worst_score


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reference")
    ap.add_argument("other")
    ap.add_argument("--box-tol", type=float, default=0.5, help="pixels per corner (default 0.5)")
    ap.add_argument("--score-tol", type=float, default=1e-3, help="default 1e-3")
    ap.add_argument("--conf", type=float, help="the --conf both runs used: forgives detections at the threshold")
    a = ap.parse_args()
    ref, oth = load(a.reference), load(a.other)
    failed = False
    if not ref:
        print(f"FAIL: {a.reference} has no results", file=sys.stderr)
        sys.exit(1)
    for name in sorted(set(ref) ^ set(oth)):
        print(f"FAIL {name}: only in {'reference' if name in ref else 'other'} output")
        failed = True
    total = matched = forgiven = 0
    worst_box = worst_score = 0.0
    for name in sorted(set(ref) & set(oth)):
        errors, notes, m, wb, ws = compare_image(ref[name], oth[name], a.box_tol, a.score_tol, a.conf)
        total += len(ref[name]["detections"])
        matched += m
        forgiven += len(notes)
        worst_box, worst_score = max(worst_box, wb), max(worst_score, ws)
        status = "FAIL" if errors else "ok  "
        failed |= bool(errors)
        print(f"{status} {name}: {len(ref[name]['detections'])} vs {len(oth[name]['detections'])} detections")
        for e in errors + notes:
            print(f"    {e}")
    print(
        f"{len(ref)} images, {total} reference detections, {matched} matched, {forgiven} at the threshold; "
        f"largest differences: box {worst_box:.3f} px (tolerance {a.box_tol}), "
        f"score {worst_score:.5f} (tolerance {a.score_tol})"
    )
    if failed:
        print("FAIL: the two builds disagree (see above)")
        sys.exit(1)
    if matched == 0:
        # Agreement on nothing proves nothing: a broken model or threshold.
        print("FAIL: no detections to compare; lower --conf or use a trained model")
        sys.exit(1)
    print("PASS: the builds agree")


if __name__ == "__main__":
    main()
