//! ONNX export of a [`YoloV8`] in ultralytics' YOLOv8 layout, so that
//! anything that runs an ultralytics `yolov8n.onnx` runs ours:
//!
//! - input `images`, f32 `[1, 3, S, S]` (`[batch, 3, S, S]` with
//!   `dynamic_batch`), RGB in 0..1;
//! - output `output0`, f32 `[1, 4 + nc, N]`: rows cx, cy, w, h in input
//!   pixels, then one sigmoid score per class; N = (S/8)² + (S/16)² + (S/32)²
//!   anchors; no NMS;
//! - `metadata_props` as ultralytics writes them (`names` as a Python dict
//!   literal `{0: 'person', 1: 'car'}`, `stride`, `imgsz` `[S, S]`, `task`,
//!   `batch`), plus ours (`producer`, `version`, `scale`, and
//!   [`ExportOptions::extra_metadata`]).
//!
//! Opset 17, IR version 8. BatchNorm is folded into the convolutions
//! (inference mode). The graph is written from the `tract_onnx::pb` types
//! with our own protobuf encoder ([`proto`]); the file is deterministic
//! (no date in the metadata, unlike ultralytics), so the same weights give
//! the same bytes.

pub mod graph;
pub mod proto;
pub mod yolo;

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use tract_onnx::pb;

use crate::trainer::model::{YoloV8, STRIDES};
use graph::{value_info_f32, Dim};
pub use yolo::{fold_batch_norm, INPUT_NAME, OUTPUT_NAME};

/// ONNX opset of the exported graph (ReduceSum with axes as an input needs ≥ 13).
pub const OPSET: i64 = 17;
/// ONNX IR version (8 is read by every onnxruntime since 1.10 and by tract).
pub const IR_VERSION: i64 = 8;

#[derive(Debug, Clone, PartialEq)]
pub struct ExportOptions {
    /// Square input size in pixels, a multiple of 32.
    pub imgsz: usize,
    /// Symbolic batch dimension `batch` on input and output instead of 1.
    pub dynamic_batch: bool,
    /// More `metadata_props` (e.g. the training data); keys must not
    /// collide with the standard ones.
    pub extra_metadata: Vec<(String, String)>,
}

impl ExportOptions {
    pub fn new(imgsz: usize) -> Self {
        Self {
            imgsz,
            dynamic_batch: false,
            extra_metadata: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExportSummary {
    /// Nodes in the graph.
    pub nodes: usize,
    /// Scalar values stored in initializers (weights, folded biases,
    /// anchors and small constants).
    pub initializer_values: usize,
    /// Size of the written file.
    pub bytes: usize,
    /// Output shape with the batch as 1: `[1, 4 + nc, N]`.
    pub output_shape: [usize; 3],
}

/// Writes `model` to `path` as ONNX (see the module docs for the layout).
/// The weights are the model's own tensors (the VarMap's Vars it was
/// built from), the class names its [`crate::trainer::model::ModelConfig`]'s.
pub fn export_onnx(model: &YoloV8, opts: &ExportOptions, path: &Path) -> Result<ExportSummary> {
    let proto = build_model_proto(model, opts)?;
    let bytes = proto::encode_model(&proto)?;
    std::fs::write(path, &bytes)
        .with_context(|| format!("writing ONNX model {}", path.display()))?;
    let graph = proto.graph.as_ref().expect("built with a graph");
    let n: usize = STRIDES.iter().map(|s| (opts.imgsz / s).pow(2)).sum();
    Ok(ExportSummary {
        nodes: graph.node.len(),
        initializer_values: graph
            .initializer
            .iter()
            .map(|t| t.dims.iter().product::<i64>() as usize)
            .sum(),
        bytes: bytes.len(),
        output_shape: [1, 4 + model.nc(), n],
    })
}

/// The ONNX model as a protobuf message (what [`export_onnx`] encodes).
pub fn build_model_proto(model: &YoloV8, opts: &ExportOptions) -> Result<pb::ModelProto> {
    let s = opts.imgsz;
    ensure!(
        s >= 32 && s % 32 == 0,
        "export: imgsz must be a positive multiple of 32, got {s}"
    );
    let cfg = model.config();
    ensure!(
        cfg.names.len() == model.nc(),
        "export: the model has {} classes but its config names {}",
        model.nc(),
        cfg.names.len()
    );
    let mut emitter = yolo::Emitter {
        g: graph::Graph::default(),
    };
    emitter.model(model, s)?;
    let g = emitter.g;

    let n: usize = STRIDES.iter().map(|st| (s / st).pow(2)).sum();
    let batch = if opts.dynamic_batch {
        Dim::Named("batch")
    } else {
        Dim::Fixed(1)
    };
    let input = value_info_f32(
        INPUT_NAME,
        &[batch, Dim::Fixed(3), Dim::Fixed(s), Dim::Fixed(s)],
    );
    let output = value_info_f32(
        OUTPUT_NAME,
        &[batch, Dim::Fixed(4 + model.nc()), Dim::Fixed(n)],
    );

    let metadata = metadata(model, opts)?
        .into_iter()
        .map(|(key, value)| pb::StringStringEntryProto { key, value })
        .collect();
    Ok(pb::ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "irdistill".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(pb::GraphProto {
            node: g.nodes,
            name: "main_graph".into(),
            initializer: g.initializers,
            input: vec![input],
            output: vec![output],
            ..Default::default()
        }),
        metadata_props: metadata,
        ..Default::default()
    })
}

/// The `metadata_props`, in order: ultralytics' keys (values formatted as
/// Python's `str()` of them, which is how ultralytics writes them and how
/// its `AutoBackend` parses them back), then ours, then the extras.
pub fn metadata(model: &YoloV8, opts: &ExportOptions) -> Result<Vec<(String, String)>> {
    let cfg = model.config();
    let names = cfg
        .names
        .iter()
        .enumerate()
        .map(|(i, name)| format!("{i}: {}", python_str_repr(name)))
        .collect::<Vec<_>>()
        .join(", ");
    let mut meta: Vec<(String, String)> = vec![
        (
            "description".into(),
            format!("irdistill {} detector (YOLOv8 architecture)", cfg.scale),
        ),
        ("author".into(), "irdistill".into()),
        ("version".into(), env!("CARGO_PKG_VERSION").into()),
        (
            "stride".into(),
            STRIDES.iter().max().expect("strides").to_string(),
        ),
        ("task".into(), "detect".into()),
        // Ultralytics writes its export `batch` argument (1) here, also
        // for dynamic exports.
        ("batch".into(), "1".into()),
        ("imgsz".into(), format!("[{s}, {s}]", s = opts.imgsz)),
        ("names".into(), format!("{{{names}}}")),
        ("producer".into(), "irdistill".into()),
        ("scale".into(), cfg.scale.clone()),
    ];
    for (k, v) in &opts.extra_metadata {
        if meta.iter().any(|(key, _)| key == k) {
            bail!("export: extra metadata key {k:?} collides with a standard metadata key");
        }
        meta.push((k.clone(), v.clone()));
    }
    Ok(meta)
}

/// Python's `repr()` of a str: single quotes unless the text contains a
/// single quote and no double quote; backslash, the quote and control
/// characters escaped; other characters (non-ASCII included) kept.
pub fn python_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_repr_of_names() {
        assert_eq!(python_str_repr("person"), "'person'");
        assert_eq!(python_str_repr("it's"), "\"it's\"");
        assert_eq!(python_str_repr("a'b\"c"), "'a\\'b\"c'");
        assert_eq!(python_str_repr("back\\slash\n"), "'back\\\\slash\\n'");
        assert_eq!(python_str_repr("café"), "'café'");
    }
}
