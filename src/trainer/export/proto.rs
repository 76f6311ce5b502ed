//! A small protobuf encoder for the ONNX messages in `tract_onnx::pb`.
//!
//! Why not `prost::Message::encode_to_vec`? tract-onnx generates these
//! types with prost but does not re-export prost, and the crate does not
//! depend on it directly. Encoding the subset of ONNX we write is short,
//! so we do it here; the tests decode our bytes with tract's own (prost)
//! decoder and compare with the message we encoded.
//!
//! Every message is destructured field by field, so a tract upgrade that
//! adds a field fails to compile here instead of silently dropping it.
//! Fields the exporter never uses are rejected with an error when set.
//!
//! Wire format: each field is `key = tag << 3 | wire type` (varint) then
//! the value: varint (0), 64-bit (1), length-delimited (2) or 32-bit (5).
//! Scalars equal to their default are omitted (the decoder's default is
//! the same value); repeated scalars are written packed, which protobuf
//! parsers accept for proto2 files such as onnx.proto too.

use anyhow::{bail, ensure, Result};
use tract_onnx::pb;

/// Encodes a ModelProto to the bytes of a `.onnx` file.
pub fn encode_model(m: &pb::ModelProto) -> Result<Vec<u8>> {
    let mut w = Writer::default();
    model(&mut w, m)?;
    Ok(w.buf)
}

const VARINT: u32 = 0;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn key(&mut self, tag: u32, wire: u32) {
        self.varint(u64::from(tag << 3 | wire));
    }

    /// int64 / int32 / enum: negative values are sign-extended to 64 bits
    /// (10 bytes), as protobuf requires.
    fn int(&mut self, tag: u32, v: i64) {
        if v != 0 {
            self.key(tag, VARINT);
            self.varint(v as u64);
        }
    }

    /// A oneof member or a proto2 field whose presence matters: written
    /// even when 0.
    fn int_always(&mut self, tag: u32, v: i64) {
        self.key(tag, VARINT);
        self.varint(v as u64);
    }

    fn float(&mut self, tag: u32, v: f32) {
        if v.to_bits() != 0 {
            self.key(tag, FIXED32);
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn bytes_always(&mut self, tag: u32, b: &[u8]) {
        self.key(tag, LEN);
        self.varint(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    fn bytes(&mut self, tag: u32, b: &[u8]) {
        if !b.is_empty() {
            self.bytes_always(tag, b);
        }
    }

    fn string(&mut self, tag: u32, s: &str) {
        self.bytes(tag, s.as_bytes());
    }

    /// Repeated strings: every element is written, empty ones too (an
    /// empty node input means "optional input left out").
    fn strings(&mut self, tag: u32, v: &[String]) {
        for s in v {
            self.bytes_always(tag, s.as_bytes());
        }
    }

    fn packed_ints<T: Copy + Into<i64>>(&mut self, tag: u32, v: &[T]) {
        if v.is_empty() {
            return;
        }
        let mut body = Writer::default();
        for &x in v {
            body.varint(x.into() as u64);
        }
        self.bytes_always(tag, &body.buf);
    }

    fn packed_floats(&mut self, tag: u32, v: &[f32]) {
        if v.is_empty() {
            return;
        }
        let mut body = Vec::with_capacity(4 * v.len());
        for x in v {
            body.extend_from_slice(&x.to_le_bytes());
        }
        self.bytes_always(tag, &body);
    }

    /// A nested message, always written (its presence is meaningful).
    fn message(&mut self, tag: u32, f: impl FnOnce(&mut Writer) -> Result<()>) -> Result<()> {
        let mut body = Writer::default();
        f(&mut body)?;
        self.bytes_always(tag, &body.buf);
        Ok(())
    }
}

fn model(w: &mut Writer, m: &pb::ModelProto) -> Result<()> {
    let pb::ModelProto {
        ir_version,
        opset_import,
        producer_name,
        producer_version,
        domain,
        model_version,
        doc_string,
        graph: g,
        metadata_props,
        training_info,
        functions,
    } = m;
    ensure!(
        training_info.is_empty(),
        "onnx encoder: ModelProto.training_info is not supported"
    );
    ensure!(
        functions.is_empty(),
        "onnx encoder: ModelProto.functions is not supported"
    );
    w.int(1, *ir_version);
    w.string(2, producer_name);
    w.string(3, producer_version);
    w.string(4, domain);
    w.int(5, *model_version);
    w.string(6, doc_string);
    if let Some(g) = g {
        w.message(7, |w| graph(w, g))?;
    }
    for op in opset_import {
        let pb::OperatorSetIdProto { domain, version } = op;
        w.message(8, |w| {
            w.string(1, domain);
            w.int_always(2, *version);
            Ok(())
        })?;
    }
    for e in metadata_props {
        w.message(14, |w| string_entry(w, e))?;
    }
    Ok(())
}

fn string_entry(w: &mut Writer, e: &pb::StringStringEntryProto) -> Result<()> {
    let pb::StringStringEntryProto { key, value } = e;
    w.string(1, key);
    w.string(2, value);
    Ok(())
}

fn graph(w: &mut Writer, g: &pb::GraphProto) -> Result<()> {
    let pb::GraphProto {
        node: nodes,
        name,
        initializer,
        sparse_initializer,
        doc_string,
        input,
        output,
        value_info: infos,
        quantization_annotation,
    } = g;
    ensure!(
        sparse_initializer.is_empty(),
        "onnx encoder: sparse initializers are not supported"
    );
    ensure!(
        quantization_annotation.is_empty(),
        "onnx encoder: quantization annotations are not supported"
    );
    for n in nodes {
        w.message(1, |w| node(w, n))?;
    }
    w.string(2, name);
    for t in initializer {
        w.message(5, |w| tensor(w, t))?;
    }
    w.string(10, doc_string);
    for v in input {
        w.message(11, |w| value_info(w, v))?;
    }
    for v in output {
        w.message(12, |w| value_info(w, v))?;
    }
    for v in infos {
        w.message(13, |w| value_info(w, v))?;
    }
    Ok(())
}

fn node(w: &mut Writer, n: &pb::NodeProto) -> Result<()> {
    let pb::NodeProto {
        input,
        output,
        name,
        op_type,
        domain,
        attribute,
        doc_string,
    } = n;
    w.strings(1, input);
    w.strings(2, output);
    w.string(3, name);
    w.string(4, op_type);
    for a in attribute {
        w.message(5, |w| attr(w, a))?;
    }
    w.string(6, doc_string);
    w.string(7, domain);
    Ok(())
}

fn attr(w: &mut Writer, a: &pb::AttributeProto) -> Result<()> {
    let pb::AttributeProto {
        name,
        ref_attr_name,
        doc_string,
        r#type,
        f,
        i,
        s,
        t,
        g,
        sparse_tensor,
        floats,
        ints,
        strings,
        tensors,
        graphs,
        sparse_tensors,
        type_protos,
    } = a;
    let unsupported = !ref_attr_name.is_empty()
        || g.is_some()
        || sparse_tensor.is_some()
        || !tensors.is_empty()
        || !graphs.is_empty()
        || !sparse_tensors.is_empty()
        || !type_protos.is_empty();
    if unsupported {
        bail!("onnx encoder: attribute {name:?} uses a field this encoder does not support");
    }
    w.string(1, name);
    w.float(2, *f);
    w.int(3, *i);
    w.bytes(4, s);
    if let Some(t) = t {
        w.message(5, |w| tensor(w, t))?;
    }
    w.packed_floats(7, floats);
    w.packed_ints(8, ints);
    for s in strings {
        w.bytes_always(9, s);
    }
    w.string(13, doc_string);
    w.int(20, i64::from(*r#type));
    Ok(())
}

fn tensor(w: &mut Writer, t: &pb::TensorProto) -> Result<()> {
    let pb::TensorProto {
        dims,
        data_type,
        segment,
        float_data,
        int32_data,
        string_data,
        int64_data,
        name,
        doc_string,
        raw_data,
        double_data,
        uint64_data,
        data_location,
        external_data,
    } = t;
    let unsupported = segment.is_some()
        || !string_data.is_empty()
        || !double_data.is_empty()
        || !uint64_data.is_empty()
        || data_location.is_some()
        || !external_data.is_empty();
    if unsupported {
        bail!("onnx encoder: tensor {name:?} uses a field this encoder does not support");
    }
    w.packed_ints(1, dims);
    w.int(2, i64::from(*data_type));
    w.packed_floats(4, float_data);
    w.packed_ints(5, int32_data);
    w.packed_ints(7, int64_data);
    w.string(8, name);
    w.bytes(9, raw_data);
    w.string(12, doc_string);
    Ok(())
}

fn value_info(w: &mut Writer, v: &pb::ValueInfoProto) -> Result<()> {
    let pb::ValueInfoProto {
        name,
        r#type,
        doc_string,
    } = v;
    w.string(1, name);
    if let Some(t) = r#type {
        w.message(2, |w| type_proto(w, t))?;
    }
    w.string(3, doc_string);
    Ok(())
}

fn type_proto(w: &mut Writer, t: &pb::TypeProto) -> Result<()> {
    let pb::TypeProto { denotation, value } = t;
    if let Some(pb::type_proto::Value::TensorType(tt)) = value {
        let pb::type_proto::Tensor { elem_type, shape } = tt;
        w.message(1, |w| {
            w.int_always(1, i64::from(*elem_type));
            if let Some(shape) = shape {
                w.message(2, |w| tensor_shape(w, shape))?;
            }
            Ok(())
        })?;
    }
    w.string(6, denotation);
    Ok(())
}

fn tensor_shape(w: &mut Writer, s: &pb::TensorShapeProto) -> Result<()> {
    use pb::tensor_shape_proto::dimension::Value;
    let pb::TensorShapeProto { dim } = s;
    for d in dim {
        let pb::tensor_shape_proto::Dimension { denotation, value } = d;
        w.message(1, |w| {
            match value {
                Some(Value::DimValue(v)) => w.int_always(1, *v),
                Some(Value::DimParam(p)) => w.bytes_always(2, p.as_bytes()),
                None => {}
            }
            w.string(3, denotation);
            Ok(())
        })?;
    }
    Ok(())
}
