#!/usr/bin/env python3
"""Reference check of an irdistill ONNX export (called by tests/export_parity.rs).

    python3 tests/onnx_check.py MODEL.onnx INPUT.npy EXPECTED.npy [--tol 1e-3]

1. `onnx.checker.check_model(full_check=True)` (structure + strict shape
   inference);
2. runs the model with onnxruntime (CPU) on INPUT ([B, 3, S, S] float32);
3. compares with EXPECTED ([B, 4 + nc, N], what candle computed): max
   absolute difference on the box rows (cx, cy, w, h; pixels) and on the
   score rows, each must be <= tol.

Prints one JSON line: {"max_abs_boxes", "max_abs_scores", "output_shape",
"input_shape", "metadata", "opset", "ir_version"}. Exit status: 0 ok,
1 mismatch or invalid model, 3 a Python package is missing.
"""
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("input")
    ap.add_argument("expected")
    ap.add_argument("--tol", type=float, default=1e-3)
    args = ap.parse_args()

    try:
        import numpy as np
        import onnx
        import onnxruntime as ort
    except ImportError as e:
        print(f"missing Python package ({e}): pip install onnx onnxruntime numpy", file=sys.stderr)
        return 3

    model = onnx.load(args.model)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # checker errors come in several classes
        print(f"onnx.checker rejected {args.model}: {e}", file=sys.stderr)
        return 1

    x = np.load(args.input).astype(np.float32)
    expected = np.load(args.expected).astype(np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    inputs = sess.get_inputs()
    outputs = sess.get_outputs()
    if [i.name for i in inputs] != ["images"] or [o.name for o in outputs] != ["output0"]:
        print(f"unexpected I/O names {[i.name for i in inputs]} -> {[o.name for o in outputs]}", file=sys.stderr)
        return 1
    (y,) = sess.run(["output0"], {"images": x})
    if y.shape != expected.shape:
        print(f"onnxruntime output shape {y.shape} != candle's {expected.shape}", file=sys.stderr)
        return 1
    d = np.abs(y - expected)
    report = {
        "max_abs_boxes": float(d[:, :4].max()),
        "max_abs_scores": float(d[:, 4:].max()),
        "output_shape": list(y.shape),
        "input_shape": [dim if isinstance(dim, (int, str)) else None for dim in inputs[0].shape],
        "declared_output_shape": list(outputs[0].shape),
        "metadata": sess.get_modelmeta().custom_metadata_map,
        "opset": [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")][0],
        "ir_version": model.ir_version,
    }
    print(json.dumps(report))
    if report["max_abs_boxes"] > args.tol or report["max_abs_scores"] > args.tol:
        print(f"onnxruntime differs from candle by more than {args.tol}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
