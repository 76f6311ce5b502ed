//! A minimal ONNX graph builder: nodes with unique names, initializers
//! (stored as little-endian `raw_data`, like PyTorch's exporter), and the
//! attribute and value-info helpers the YOLOv8 export needs.

use std::collections::HashSet;

use tract_onnx::pb;

use pb::attribute_proto::AttributeType;
use pb::tensor_proto::DataType;

#[derive(Default)]
pub struct Graph {
    pub nodes: Vec<pb::NodeProto>,
    pub initializers: Vec<pb::TensorProto>,
    used_names: HashSet<String>,
}

impl Graph {
    /// `base`, or `base_1`, `base_2`, … if taken.
    fn unique(&mut self, base: String) -> String {
        let mut name = base.clone();
        let mut i = 0;
        while self.used_names.contains(&name) {
            i += 1;
            name = format!("{base}_{i}");
        }
        self.used_names.insert(name.clone());
        name
    }

    /// Adds a node `op` in `scope` (e.g. `backbone.b0/conv`), named like
    /// PyTorch's exporter does (`/backbone.b0/conv/Conv`), with `n_out`
    /// outputs `<name>_output_<i>`. Returns the output names.
    pub fn node_n(
        &mut self,
        scope: &str,
        op: &str,
        inputs: &[&str],
        n_out: usize,
        attrs: Vec<pb::AttributeProto>,
    ) -> Vec<String> {
        let name = self.unique(format!("/{scope}/{op}"));
        let output: Vec<String> = (0..n_out).map(|i| format!("{name}_output_{i}")).collect();
        self.nodes.push(pb::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: output.clone(),
            name,
            op_type: op.to_string(),
            attribute: attrs,
            ..Default::default()
        });
        output
    }

    /// A node with one output; returns its name.
    pub fn node(
        &mut self,
        scope: &str,
        op: &str,
        inputs: &[&str],
        attrs: Vec<pb::AttributeProto>,
    ) -> String {
        self.node_n(scope, op, inputs, 1, attrs).remove(0)
    }

    /// Renames the output of the last node (used for the graph output).
    pub fn rename_last_output(&mut self, name: &str) {
        let last = self.nodes.last_mut().expect("a node to rename");
        last.output[0] = name.to_string();
    }

    /// An f32 initializer `[dims]`; returns its name.
    pub fn init_f32(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len(), "{name}");
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_init(name, dims, DataType::Float, raw)
    }

    /// A 1-D int64 initializer (shapes, split sizes, axes); returns its name.
    pub fn init_i64(&mut self, name: &str, data: &[i64]) -> String {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_init(name, &[data.len()], DataType::Int64, raw)
    }

    fn push_init(&mut self, name: &str, dims: &[usize], dt: DataType, raw_data: Vec<u8>) -> String {
        let name = self.unique(name.to_string());
        self.initializers.push(pb::TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: dt as i32,
            name: name.clone(),
            raw_data,
            ..Default::default()
        });
        name
    }

    /// Number of scalar values stored in the initializers.
    pub fn initializer_values(&self) -> usize {
        self.initializers
            .iter()
            .map(|t| t.dims.iter().product::<i64>() as usize)
            .sum()
    }
}

pub fn attr_int(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

pub fn attr_ints(name: &str, ints: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

pub fn attr_str(name: &str, s: &str) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: s.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// A dimension of a graph input/output: a fixed size or a symbolic name.
#[derive(Debug, Clone, Copy)]
pub enum Dim {
    Fixed(usize),
    Named(&'static str),
}

/// An f32 tensor value-info (graph input or output).
pub fn value_info_f32(name: &str, dims: &[Dim]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(n) => Value::DimValue(*n as i64),
                Dim::Named(s) => Value::DimParam(s.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
