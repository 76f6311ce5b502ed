#!/usr/bin/env python3
"""PyTorch reference for `trainer bench`: one full training step (forward,
loss, backward, AdamW step) of the same network, on the same machine and
thread count, so the candle trainer's speed can be stated as a ratio.

Two references, both printed as one JSON object per line (last line: all):

- `ultralytics`: ultralytics' own DetectionModel built from the YOLOv8 yaml
  at our student's scale (depth 0.33, width 0.125 for student-p, …) with
  its BatchNorm and its own v8DetectionLoss (TAL, CIoU, DFL, BCE) — the
  same recipe our trainer implements.
- `onnx2torch` (with --onnx M.onnx, our `trainer export --dynamic`
  output): the exported graph rebuilt as a torch module (BatchNorm folded
  into the convs) with a plain loss on its raw output; a check that the
  first reference times the network we actually train.

Usage (benchmark, not a test; numbers only):
    python3 benches/torch_train_step.py --model student-p --imgsz 128 \
        --batch 16 --steps 10 --threads 2 [--onnx runs/x/dyn.onnx]

Needs: pip install torch ultralytics onnx2torch onnx
"""
import argparse
import json
import time

import torch

SCALES = {  # depth, width, max_channels: src/trainer/model/config.rs
    "student-n": (0.33, 0.25, 1024),
    "student-p": (0.33, 0.125, 1024),
}
NAMES = ["person", "car"]  # src/shared/synth/scene.rs CLASS_NAMES


def yolov8_yaml(scale):
    """ultralytics' yolov8.yaml (backbone + head) at one scale."""
    depth, width, max_ch = SCALES[scale]
    return {
        "nc": len(NAMES),
        "depth_multiple": depth,
        "width_multiple": width,
        "max_channels": max_ch,
        "backbone": [
            [-1, 1, "Conv", [64, 3, 2]],
            [-1, 1, "Conv", [128, 3, 2]],
            [-1, 3, "C2f", [128, True]],
            [-1, 1, "Conv", [256, 3, 2]],
            [-1, 6, "C2f", [256, True]],
            [-1, 1, "Conv", [512, 3, 2]],
            [-1, 6, "C2f", [512, True]],
            [-1, 1, "Conv", [1024, 3, 2]],
            [-1, 3, "C2f", [1024, True]],
            [-1, 1, "SPPF", [1024, 5]],
        ],
        "head": [
            [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
            [[-1, 6], 1, "Concat", [1]],
            [-1, 3, "C2f", [512]],
            [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
            [[-1, 4], 1, "Concat", [1]],
            [-1, 3, "C2f", [256]],
            [-1, 1, "Conv", [256, 3, 2]],
            [[-1, 12], 1, "Concat", [1]],
            [-1, 3, "C2f", [512]],
            [-1, 1, "Conv", [512, 3, 2]],
            [[-1, 9], 1, "Concat", [1]],
            [-1, 3, "C2f", [1024]],
            [[15, 18, 21], 1, "Detect", ["nc"]],
        ],
    }


def synthetic_batch(batch, imgsz, objects_per_image, gen):
    """Images and ultralytics-style targets: normalised xywh boxes."""
    images = torch.rand(batch, 3, imgsz, imgsz, generator=gen)
    n = batch * objects_per_image
    wh = 0.05 + 0.3 * torch.rand(n, 2, generator=gen)
    xy = wh / 2 + (1 - wh) * torch.rand(n, 2, generator=gen)
    return {
        "img": images,
        "batch_idx": torch.arange(batch).repeat_interleave(objects_per_image).float(),
        "cls": torch.randint(0, len(NAMES), (n, 1), generator=gen).float(),
        "bboxes": torch.cat([xy, wh], 1),
    }


def time_steps(step, warmup, steps):
    for _ in range(warmup):
        step()
    times_ms = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times_ms.append((time.perf_counter() - t0) * 1e3)
    return times_ms


def summary(kind, args, times_ms, params):
    mean = sum(times_ms) / len(times_ms)
    return {
        "reference": kind,
        "model": args.model,
        "imgsz": args.imgsz,
        "batch": args.batch,
        "steps": args.steps,
        "threads": torch.get_num_threads(),
        "parameters": params,
        "ms_per_step": mean,
        "median_ms_per_step": sorted(times_ms)[len(times_ms) // 2],
        "min_ms_per_step": min(times_ms),
        "images_per_s": args.batch * 1e3 / mean,
        "torch": torch.__version__,
    }


def bench_ultralytics(args):
    from types import SimpleNamespace

    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel(yolov8_yaml(args.model), ch=3, nc=len(NAMES), verbose=False)
    # the loss reads its gains from model.args (ultralytics' defaults)
    model.args = SimpleNamespace(box=7.5, cls=0.5, dfl=1.5)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=0.002, weight_decay=0.0005)
    gen = torch.Generator().manual_seed(0)
    batch = synthetic_batch(args.batch, args.imgsz, args.objects, gen)

    def step():
        opt.zero_grad(set_to_none=True)
        loss, _ = model.loss(batch)
        loss.sum().backward()
        opt.step()

    params = sum(p.numel() for p in model.parameters())
    return summary("ultralytics", args, time_steps(step, args.warmup, args.steps), params)


def squeeze_reduce_sums(model):
    """onnx2torch 1.5 keeps the reduced axis of a ReduceSum whose axes come
    as an input (opset 13+) even with keepdims=0, which breaks the DFL
    decode; the same graph with keepdims=1 + Squeeze converts correctly."""
    import onnx
    from onnx import helper

    nodes = []
    for node in model.graph.node:
        keep = [a for a in node.attribute if a.name == "keepdims"]
        if node.op_type == "ReduceSum" and len(node.input) > 1 and keep and keep[0].i == 0:
            keep[0].i = 1
            kept = node.output[0] + "_kept"
            squeeze = helper.make_node("Squeeze", [kept, node.input[1]], [node.output[0]])
            node.output[0] = kept
            nodes += [node, squeeze]
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model


def bench_onnx2torch(args):
    import onnx
    from onnx2torch import convert

    model = convert(squeeze_reduce_sums(onnx.load(args.onnx)))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=0.002, weight_decay=0.0005)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, 3, args.imgsz, args.imgsz, generator=gen)

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(images)  # [B, 4 + nc, N]
        out.square().mean().backward()
        opt.step()

    params = sum(p.numel() for p in model.parameters())
    return summary("onnx2torch", args, time_steps(step, args.warmup, args.steps), params)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="student-p", choices=sorted(SCALES))
    ap.add_argument("--imgsz", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--objects", type=int, default=4, help="ground-truth boxes per image")
    ap.add_argument("--onnx", help="our `trainer export --dynamic` output (onnx2torch check)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    results = [bench_ultralytics(args)]
    print(json.dumps(results[-1]), flush=True)
    if args.onnx:
        results.append(bench_onnx2torch(args))
        print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"results": results}))


if __name__ == "__main__":
    main()
