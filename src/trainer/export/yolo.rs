//! Emits the ONNX nodes of a [`YoloV8`], block by block, mirroring
//! `src/model` (each function here is the inference-mode twin of a
//! block's `forward_t(.., false)`).
//!
//! - Conv + BatchNorm are folded into one ONNX `Conv` with bias (running
//!   statistics), followed by SiLU written as `x * Sigmoid(x)`.
//! - Upsampling is `Resize` (nearest, asymmetric, floor, scales 1,1,2,2):
//!   out[i] = in[i / 2], what PyTorch's exporter writes for nn.Upsample.
//! - The decode (DFL, dist2bbox, sigmoid) is in the graph, so the output is
//!   ultralytics' `output0` `[B, 4 + nc, N]`. The DFL expectation over the
//!   bins (axis 2 of `[B, 4, 16, N]`) is written with ReduceMax, Exp and
//!   ReduceSum rather than a Softmax node, which tract runs slowly.

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Tensor};
use candle_nn::Conv2d;

use super::graph::{attr_int, attr_ints, attr_str, Graph};
use crate::trainer::model::blocks::{Bottleneck, C2f, Conv, Sppf};
use crate::trainer::model::head::{Branch, DetectHead, REG_MAX, STRIDES};
use crate::trainer::model::{make_anchors, Backbone, Neck, YoloV8};

/// Name of the graph's output, as ultralytics exports it.
pub const OUTPUT_NAME: &str = "output0";
/// Name of the graph's input, as ultralytics exports it.
pub const INPUT_NAME: &str = "images";

fn to_vec(t: &Tensor, what: &str) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .with_context(|| format!("reading {what}"))
}

/// BatchNorm folded into the preceding bias-free conv, inference mode:
/// y = γ·(conv(x) − μ)/√(σ² + ε) + β = conv'(x) + b' with
/// W' = W · γ/√(σ² + ε) (per output channel) and b' = β − μ · γ/√(σ² + ε).
/// Computed in f64, stored as f32.
pub fn fold_batch_norm(c: &Conv, scope: &str) -> Result<(Vec<f32>, Vec<f32>)> {
    let w = to_vec(c.conv.weight(), &format!("{scope}.conv.weight"))?;
    let mean = to_vec(c.bn.running_mean(), &format!("{scope}.bn.running_mean"))?;
    let var = to_vec(c.bn.running_var(), &format!("{scope}.bn.running_var"))?;
    let (gamma, beta) = match c.bn.weight_and_bias() {
        Some((g, b)) => (
            to_vec(g, &format!("{scope}.bn.weight"))?,
            to_vec(b, &format!("{scope}.bn.bias"))?,
        ),
        None => (vec![1.0; c.c_out], vec![0.0; c.c_out]),
    };
    ensure!(
        mean.len() == c.c_out && var.len() == c.c_out && w.len() == c.c_out * c.c_in * c.k * c.k,
        "{scope}: BatchNorm/conv sizes disagree with {} output channels",
        c.c_out
    );
    let per_out = w.len() / c.c_out;
    let mut w_fold = Vec::with_capacity(w.len());
    let mut b_fold = Vec::with_capacity(c.c_out);
    for o in 0..c.c_out {
        let scale = gamma[o] as f64 / (var[o] as f64 + c.bn.eps()).sqrt();
        w_fold.extend(
            w[o * per_out..(o + 1) * per_out]
                .iter()
                .map(|&v| (v as f64 * scale) as f32),
        );
        b_fold.push((beta[o] as f64 - mean[o] as f64 * scale) as f32);
    }
    Ok((w_fold, b_fold))
}

/// The ONNX `Conv` attributes for a square kernel with "same" padding.
fn conv_attrs(k: usize, stride: usize) -> Vec<tract_onnx::pb::AttributeProto> {
    let (k, s, p) = (k as i64, stride as i64, (k / 2) as i64);
    vec![
        attr_ints("dilations", &[1, 1]),
        attr_int("group", 1),
        attr_ints("kernel_shape", &[k, k]),
        attr_ints("pads", &[p, p, p, p]),
        attr_ints("strides", &[s, s]),
    ]
}

pub struct Emitter {
    pub g: Graph,
}

impl Emitter {
    /// Conv (BN folded) → SiLU. `[B, c_in, H, W]` → `[B, c_out, H/s, W/s]`.
    fn conv(&mut self, x: &str, c: &Conv, scope: &str) -> Result<String> {
        let (w, b) = fold_batch_norm(c, scope)?;
        let w = self.g.init_f32(
            &format!("{scope}.conv.weight"),
            &[c.c_out, c.c_in, c.k, c.k],
            &w,
        );
        let b = self
            .g
            .init_f32(&format!("{scope}.conv.bias"), &[c.c_out], &b);
        let y = self.g.node(
            &format!("{scope}/conv"),
            "Conv",
            &[x, &w, &b],
            conv_attrs(c.k, c.stride),
        );
        let s = self
            .g
            .node(&format!("{scope}/act"), "Sigmoid", &[&y], vec![]);
        Ok(self
            .g
            .node(&format!("{scope}/act"), "Mul", &[&y, &s], vec![]))
    }

    fn bottleneck(&mut self, x: &str, b: &Bottleneck, scope: &str) -> Result<String> {
        let y = self.conv(x, &b.cv1, &format!("{scope}.cv1"))?;
        let y = self.conv(&y, &b.cv2, &format!("{scope}.cv2"))?;
        Ok(if b.add {
            self.g.node(scope, "Add", &[x, &y], vec![])
        } else {
            y
        })
    }

    fn c2f(&mut self, x: &str, c: &C2f, scope: &str) -> Result<String> {
        let y = self.conv(x, &c.cv1, &format!("{scope}.cv1"))?; // [B, 2c, H, W]
        let split = self
            .g
            .init_i64(&format!("{scope}.split"), &[c.c as i64, c.c as i64]);
        let mut ys = self
            .g
            .node_n(scope, "Split", &[&y, &split], 2, vec![attr_int("axis", 1)]);
        for (i, m) in c.m.iter().enumerate() {
            let last = ys.last().expect("two halves").clone();
            ys.push(self.bottleneck(&last, m, &format!("{scope}.m.{i}"))?);
        }
        let refs: Vec<&str> = ys.iter().map(String::as_str).collect();
        let cat = self
            .g
            .node(scope, "Concat", &refs, vec![attr_int("axis", 1)]); // [B, (2+n)c, H, W]
        self.conv(&cat, &c.cv2, &format!("{scope}.cv2"))
    }

    fn sppf(&mut self, x: &str, s: &Sppf, scope: &str) -> Result<String> {
        let y = self.conv(x, &s.cv1, &format!("{scope}.cv1"))?;
        let (k, p) = (s.k as i64, (s.k / 2) as i64);
        let mut ys = vec![y];
        for _ in 0..3 {
            let attrs = vec![
                attr_ints("kernel_shape", &[k, k]),
                attr_ints("pads", &[p, p, p, p]),
                attr_ints("strides", &[1, 1]),
            ];
            let last = ys.last().expect("cv1 output").clone();
            ys.push(
                self.g
                    .node(&format!("{scope}/m"), "MaxPool", &[&last], attrs),
            );
        }
        let refs: Vec<&str> = ys.iter().map(String::as_str).collect();
        let cat = self
            .g
            .node(scope, "Concat", &refs, vec![attr_int("axis", 1)]);
        self.conv(&cat, &s.cv2, &format!("{scope}.cv2"))
    }

    fn upsample(&mut self, x: &str, scope: &str) -> String {
        let scales = self
            .g
            .init_f32(&format!("{scope}.scales"), &[4], &[1.0, 1.0, 2.0, 2.0]);
        let attrs = vec![
            attr_str("coordinate_transformation_mode", "asymmetric"),
            attr_str("mode", "nearest"),
            attr_str("nearest_mode", "floor"),
        ];
        // Inputs: X, roi (unused: empty name), scales.
        self.g.node(scope, "Resize", &[x, "", &scales], attrs)
    }

    fn concat(&mut self, inputs: &[&str], axis: i64, scope: &str) -> String {
        self.g
            .node(scope, "Concat", inputs, vec![attr_int("axis", axis)])
    }

    /// The head's biased 1×1 conv (no BatchNorm).
    fn plain_conv(&mut self, x: &str, c: &Conv2d, scope: &str) -> Result<String> {
        let (o, i, kh, kw) = c.weight().dims4()?;
        let w = self.g.init_f32(
            &format!("{scope}.weight"),
            &[o, i, kh, kw],
            &to_vec(c.weight(), scope)?,
        );
        let bias = c
            .bias()
            .with_context(|| format!("{scope}: head conv without bias"))?;
        let b = self
            .g
            .init_f32(&format!("{scope}.bias"), &[o], &to_vec(bias, scope)?);
        Ok(self.g.node(scope, "Conv", &[x, &w, &b], conv_attrs(kh, 1)))
    }

    fn branch(&mut self, x: &str, b: &Branch, scope: &str) -> Result<String> {
        let y = self.conv(x, &b.c0, &format!("{scope}.0"))?;
        let y = self.conv(&y, &b.c1, &format!("{scope}.1"))?;
        self.plain_conv(&y, &b.out, &format!("{scope}.2"))
    }

    /// `images` → (P3, P4, P5).
    pub fn backbone(&mut self, x: &str, b: &Backbone, scope: &str) -> Result<[String; 3]> {
        let s = |i: usize| format!("{scope}.b{i}");
        let x = self.conv(x, &b.b0, &s(0))?;
        let x = self.conv(&x, &b.b1, &s(1))?;
        let x = self.c2f(&x, &b.b2, &s(2))?;
        let x = self.conv(&x, &b.b3, &s(3))?;
        let p3 = self.c2f(&x, &b.b4, &s(4))?;
        let x = self.conv(&p3, &b.b5, &s(5))?;
        let p4 = self.c2f(&x, &b.b6, &s(6))?;
        let x = self.conv(&p4, &b.b7, &s(7))?;
        let x = self.c2f(&x, &b.b8, &s(8))?;
        let p5 = self.sppf(&x, &b.b9, &s(9))?;
        Ok([p3, p4, p5])
    }

    /// (P3, P4, P5) → (N3, N4, N5); see `model::neck`.
    pub fn neck(&mut self, p: &[String; 3], n: &Neck, scope: &str) -> Result<[String; 3]> {
        let s = |i: usize| format!("{scope}.n{i}");
        let [p3, p4, p5] = p;
        let up = self.upsample(p5, &s(10));
        let cat = self.concat(&[&up, p4], 1, &s(11));
        let t4 = self.c2f(&cat, &n.n12, &s(12))?;
        let up = self.upsample(&t4, &s(13));
        let cat = self.concat(&[&up, p3], 1, &s(14));
        let n3 = self.c2f(&cat, &n.n15, &s(15))?;
        let down = self.conv(&n3, &n.n16, &s(16))?;
        let cat = self.concat(&[&down, &t4], 1, &s(17));
        let n4 = self.c2f(&cat, &n.n18, &s(18))?;
        let down = self.conv(&n4, &n.n19, &s(19))?;
        let cat = self.concat(&[&down, p5], 1, &s(20));
        let n5 = self.c2f(&cat, &n.n21, &s(21))?;
        Ok([n3, n4, n5])
    }

    /// (N3, N4, N5) → `output0` `[B, 4 + nc, N]`, for a square input of
    /// `imgsz` pixels (the anchors are constants of the graph).
    pub fn head(
        &mut self,
        f: &[String; 3],
        h: &DetectHead,
        imgsz: usize,
        scope: &str,
    ) -> Result<String> {
        // The grid (H, W) of each level.
        let shapes: Vec<(usize, usize)> = STRIDES.iter().map(|s| (imgsz / s, imgsz / s)).collect();
        let levels = self.head_levels(f, h, &shapes, scope)?;
        let n: usize = shapes.iter().map(|(a, b)| a * b).sum();
        let (box_logits, cls_logits) = self.concat_levels(&levels, h.nc(), scope);
        let dist = self.dfl_expectation(&box_logits, n, scope); // [B, 4, N] cells
        let (anchors, strides) = self.anchor_constants(&shapes, n, scope)?;
        let xywh = self.dist2bbox_xywh(&dist, &anchors, scope); // [B, 4, N] cells
        let boxes = self.g.node(scope, "Mul", &[&xywh, &strides], vec![]); // [B, 4, N] pixels
        let scores = self.g.node(scope, "Sigmoid", &[&cls_logits], vec![]); // [B, nc, N]
        self.concat(&[&boxes, &scores], 1, scope);
        self.g.rename_last_output(OUTPUT_NAME);
        Ok(OUTPUT_NAME.to_string())
    }

    /// Per level: the box (`cv2`) and class (`cv3`) branches, concatenated
    /// and flattened, `[B, 4·16 + nc, H, W]` → `[B, no, H·W]`; `shapes` are
    /// the levels' grids `(H, W)`.
    fn head_levels(
        &mut self,
        f: &[String; 3],
        h: &DetectHead,
        shapes: &[(usize, usize)],
        scope: &str,
    ) -> Result<Vec<String>> {
        let no = h.no();
        let mut flat = Vec::with_capacity(3);
        for (l, (x, &(gh, gw))) in f.iter().zip(shapes).enumerate() {
            let boxes = self.branch(x, &h.cv2[l], &format!("{scope}.cv2.{l}"))?;
            let classes = self.branch(x, &h.cv3[l], &format!("{scope}.cv3.{l}"))?;
            let cat = self.concat(&[&boxes, &classes], 1, &format!("{scope}.level{l}"));
            // -1 keeps the batch dimension free for dynamic-batch exports.
            let shape = self.g.init_i64(
                &format!("{scope}.level{l}.shape"),
                &[-1, no as i64, (gh * gw) as i64],
            );
            flat.push(self.g.node(
                &format!("{scope}.level{l}"),
                "Reshape",
                &[&cat, &shape],
                vec![],
            ));
        }
        Ok(flat)
    }

    /// The levels `[B, no, H_l·W_l]` concatenated to `[B, no, N]` and split
    /// into box logits `[B, 4·16, N]` and class logits `[B, nc, N]`.
    fn concat_levels(&mut self, levels: &[String], nc: usize, scope: &str) -> (String, String) {
        let refs: Vec<&str> = levels.iter().map(String::as_str).collect();
        let x = self.concat(&refs, 2, scope); // [B, no, N]
        let split = self
            .g
            .init_i64(&format!("{scope}.split"), &[4 * REG_MAX as i64, nc as i64]);
        let mut parts = self
            .g
            .node_n(scope, "Split", &[&x, &split], 2, vec![attr_int("axis", 1)]);
        let cls_logits = parts.pop().expect("two parts");
        let box_logits = parts.pop().expect("two parts");
        (box_logits, cls_logits)
    }

    /// DFL: `[B, 64, N]` → `[B, 4, 16, N]`; the expectation Σ softmax(x)_i · i
    /// over the 16 bins (axis 2) as Σ e_i·i / Σ e_i with e = exp(x − max x),
    /// giving the side distances `[B, 4, N]` in grid cells. The same numbers
    /// as Softmax → Mul → ReduceSum, but tract runs a Softmax node down a
    /// slow generic path (11.8 ms of a 28 ms frame for student-p at 256 on
    /// one thread; these plain ops take about 2 ms).
    fn dfl_expectation(&mut self, box_logits: &str, n: usize, scope: &str) -> String {
        let dfl = format!("{scope}.dfl");
        let shape = self
            .g
            .init_i64(&format!("{dfl}.shape"), &[-1, 4, REG_MAX as i64, n as i64]);
        let x = self.g.node(&dfl, "Reshape", &[box_logits, &shape], vec![]);
        let max = self.g.node(
            &dfl,
            "ReduceMax",
            &[&x],
            vec![attr_ints("axes", &[2]), attr_int("keepdims", 1)],
        ); // [B, 4, 1, N]
        let shifted = self.g.node(&dfl, "Sub", &[&x, &max], vec![]);
        let e = self.g.node(&dfl, "Exp", &[&shifted], vec![]); // [B, 4, 16, N]
        let bins: Vec<f32> = (0..REG_MAX).map(|i| i as f32).collect();
        let bins = self
            .g
            .init_f32(&format!("{dfl}.bins"), &[1, 1, REG_MAX, 1], &bins);
        let weighted = self.g.node(&dfl, "Mul", &[&e, &bins], vec![]);
        let axes = self.g.init_i64(&format!("{dfl}.axes"), &[2]);
        let num = self.g.node(
            &dfl,
            "ReduceSum",
            &[&weighted, &axes],
            vec![attr_int("keepdims", 0)],
        ); // [B, 4, N]
        let den = self.g.node(
            &dfl,
            "ReduceSum",
            &[&e, &axes],
            vec![attr_int("keepdims", 0)],
        );
        self.g.node(&dfl, "Div", &[&num, &den], vec![]) // [B, 4, N] cells
    }

    /// The anchor points `[1, 2, N]` (grid cells: all x, then all y) and the
    /// stride of each anchor `[1, 1, N]` as initializers, for an input whose
    /// levels have grids `shapes`.
    fn anchor_constants(
        &mut self,
        shapes: &[(usize, usize)],
        n: usize,
        scope: &str,
    ) -> Result<(String, String)> {
        let (points, strides) = make_anchors(shapes, &STRIDES, 0.5, &candle_core::Device::Cpu)?;
        let points = to_vec(&points.t()?, "anchor points")?; // [2, N]: all x, then all y
        let anchors = self
            .g
            .init_f32(&format!("{scope}.anchors"), &[1, 2, n], &points);
        let strides = self.g.init_f32(
            &format!("{scope}.strides"),
            &[1, 1, n],
            &to_vec(&strides, "strides")?,
        );
        Ok((anchors, strides))
    }

    /// dist2bbox (xywh), as ultralytics' Detect: side distances `[B, 4, N]`
    /// (l, t, r, b) and anchors `[1, 2, N]` to `cx, cy, w, h` `[B, 4, N]`,
    /// all in grid cells.
    fn dist2bbox_xywh(&mut self, dist: &str, anchors: &str, scope: &str) -> String {
        let two = self.g.init_f32(&format!("{scope}.two"), &[1], &[2.0]);
        let d = format!("{scope}.dist2bbox");
        let halves = self.g.init_i64(&format!("{d}.split"), &[2, 2]);
        let lt_rb = self
            .g
            .node_n(&d, "Split", &[dist, &halves], 2, vec![attr_int("axis", 1)]);
        let x1y1 = self.g.node(&d, "Sub", &[anchors, &lt_rb[0]], vec![]);
        let x2y2 = self.g.node(&d, "Add", &[anchors, &lt_rb[1]], vec![]);
        let sum = self.g.node(&d, "Add", &[&x1y1, &x2y2], vec![]);
        let c_xy = self.g.node(&d, "Div", &[&sum, &two], vec![]);
        let wh = self.g.node(&d, "Sub", &[&x2y2, &x1y1], vec![]);
        self.concat(&[&c_xy, &wh], 1, &d)
    }

    /// The whole model: `images` → `output0`.
    pub fn model(&mut self, m: &YoloV8, imgsz: usize) -> Result<()> {
        let p = self.backbone(INPUT_NAME, &m.backbone, "backbone")?;
        let n = self.neck(&p, &m.neck, "neck")?;
        self.head(&n, &m.head, imgsz, "head")?;
        Ok(())
    }
}
