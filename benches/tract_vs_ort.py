#!/usr/bin/env python3
"""tract (through `irdistill bench`) against onnxruntime on the same ONNX
model, the same input size and the same thread count. Prints numbers,
asserts nothing.

    python3 benches/tract_vs_ort.py MODEL.onnx [--threads 2] [--runs 200]
        [--irdistill target/release/irdistill]

onnxruntime runs with intra_op_num_threads = --threads, inter_op 1,
sequential execution and all graph optimisations, on a letterboxed
synthetic frame (random data is fine for timing). tract's figure is the
"model only" line of `irdistill bench --no-rss` (plan optimised for the
fixed [1, 3, S, S] input, Executor::multithread(threads)).
"""
import argparse
import json
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort


def ort_fps(model, threads, runs):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    meta = sess.get_modelmeta().custom_metadata_map
    h, w = eval(meta.get("imgsz", "[640, 640]"))
    x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    for _ in range(5):
        sess.run(None, {inp.name: x})
    times = []
    t0 = time.perf_counter()
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {inp.name: x})
        times.append((time.perf_counter() - t) * 1e3)
    fps = runs / (time.perf_counter() - t0)
    return fps, float(np.median(times)), (h, w)


def tract_fps(exe, model, threads, runs):
    out = subprocess.run(
        [exe, "bench", "--model", model, "--threads", str(threads), "--frames", str(runs), "--no-rss", "--log", "warn"],
        check=True, capture_output=True, text=True).stdout
    report = json.loads(out.strip().splitlines()[-1])
    return max(report["model_fps"], report["model_fps_after"]), report["model_p50_ms"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--irdistill", default="target/release/irdistill")
    a = p.parse_args()
    o_fps, o_p50, (h, w) = ort_fps(a.model, a.threads, a.runs)
    t_fps, t_p50 = tract_fps(a.irdistill, a.model, a.threads, a.runs)
    # onnxruntime again: the machine may be shared, the two ORT runs bracket tract's
    o2_fps, o2_p50, _ = ort_fps(a.model, a.threads, a.runs)
    best_o = max(o_fps, o2_fps)
    print(f"model {a.model} [{h}x{w}], {a.threads} threads, {a.runs} runs")
    print(f"onnxruntime {ort.__version__}: {o_fps:.1f} / {o2_fps:.1f} fps (p50 {min(o_p50, o2_p50):.2f} ms)")
    print(f"tract:             {t_fps:.1f} fps (p50 {t_p50:.2f} ms)")
    print(f"tract / onnxruntime: {t_fps / best_o:.2f}")
    print(json.dumps({"ort_fps": best_o, "tract_fps": t_fps, "ratio": t_fps / best_o, "threads": a.threads}))


if __name__ == "__main__":
    sys.exit(main())
