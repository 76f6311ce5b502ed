#!/usr/bin/env python3
"""Reference for `irdistill detect`: ultralytics' letterbox and NMS in
numpy, the model in onnxruntime. Usage:

    detect_ref.py MODEL.onnx IMAGE.npy [--conf 0.25] [--iou 0.45]

IMAGE.npy is an RGB uint8 [H, W, 3] array. Prints one JSON line like
`irdistill detect` does. Exit code 3 when onnxruntime or numpy is missing.

The letterbox is ultralytics.data.augment.LetterBox (auto=False,
scaleup=True, centre=True): r = min(h'/h, w'/w), cv2.resize to
(round(w r), round(h r)) with INTER_LINEAR (re-implemented: half-pixel
centres, edge clamping, result rounded to uint8 as cv2 does), then a
border of 114 with top = round(dh - 0.1), left = round(dw - 0.1).
Postprocess: ultralytics.utils.ops.non_max_suppression (best class per
anchor, class-aware greedy NMS) and scale_boxes (same pad rounding), clip.
"""
import argparse
import json
import sys

try:
    import numpy as np
    import onnxruntime as ort
except ImportError as e:  # pragma: no cover
    print(f"missing Python module: {e}", file=sys.stderr)
    sys.exit(3)


def resize_linear(img, new_w, new_h):
    h, w = img.shape[:2]

    def taps(src, dst):
        scale = src / dst
        s = (np.arange(dst) + 0.5) * scale - 0.5
        s = np.clip(s, 0, src - 1)
        i0 = np.floor(s).astype(int)
        i1 = np.minimum(i0 + 1, src - 1)
        return i0, i1, (s - i0)

    y0, y1, fy = taps(h, new_h)
    x0, x1, fx = taps(w, new_w)
    f = img.astype(np.float64)
    top = f[y0][:, x0] * (1 - fx)[None, :, None] + f[y0][:, x1] * fx[None, :, None]
    bot = f[y1][:, x0] * (1 - fx)[None, :, None] + f[y1][:, x1] * fx[None, :, None]
    out = top * (1 - fy)[:, None, None] + bot * fy[:, None, None]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def letterbox(img, new_h, new_w):
    h, w = img.shape[:2]
    r = min(new_h / h, new_w / w)
    unpad_w, unpad_h = int(round(w * r)), int(round(h * r))
    dw, dh = (new_w - unpad_w) / 2, (new_h - unpad_h) / 2
    if (w, h) != (unpad_w, unpad_h):
        img = resize_linear(img, unpad_w, unpad_h)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    out = np.full((unpad_h + top + bottom, unpad_w + left + right, 3), 114, np.uint8)
    out[top:top + unpad_h, left:left + unpad_w] = img
    return out


def iou(a, b):
    x1, y1 = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
    x2, y2 = np.minimum(a[2], b[:, 2]), np.minimum(a[3], b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda z: (z[..., 2] - z[..., 0]) * (z[..., 3] - z[..., 1])
    return inter / (area(a) + area(b) - inter)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("image")
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--iou", type=float, default=0.45)
    a = p.parse_args()
    sess = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    names = eval(meta["names"])  # ultralytics stores a Python dict literal
    ih, iw = eval(meta["imgsz"])
    img = np.load(a.image)
    h0, w0 = img.shape[:2]
    x = letterbox(img, ih, iw).transpose(2, 0, 1)[None].astype(np.float32) / 255.0
    y = sess.run(None, {sess.get_inputs()[0].name: x})[0][0]  # [4 + nc, N]
    boxes, scores = y[:4].T, y[4:].T
    cls = scores.argmax(1)
    conf = scores.max(1)
    keep = conf > a.conf
    boxes, cls, conf = boxes[keep], cls[keep], conf[keep]
    xyxy = np.stack([boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2,
                     boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2], 1)
    order = np.argsort(-conf, kind="stable")
    kept = []
    for i in order:
        if all(cls[k] != cls[i] or iou(xyxy[i], xyxy[k:k + 1])[0] <= a.iou for k in kept):
            kept.append(i)
        if len(kept) >= 300:
            break
    gain = min(ih / h0, iw / w0)
    pad_x = round((iw - w0 * gain) / 2 - 0.1)
    pad_y = round((ih - h0 * gain) / 2 - 0.1)
    dets = []
    for i in kept:
        b = xyxy[i].astype(np.float64)
        b = [(b[0] - pad_x) / gain, (b[1] - pad_y) / gain, (b[2] - pad_x) / gain, (b[3] - pad_y) / gain]
        b = [min(max(b[0], 0), w0), min(max(b[1], 0), h0), min(max(b[2], 0), w0), min(max(b[3], 0), h0)]
        dets.append({"class_id": int(cls[i]), "label": names[int(cls[i])],
                     "score": float(conf[i]), "box": b})
    print(json.dumps({"image": a.image, "width": w0, "height": h0, "detections": dets}))


if __name__ == "__main__":
    main()
