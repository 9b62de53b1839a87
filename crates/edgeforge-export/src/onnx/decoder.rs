//! The llama decoder as an ONNX graph with a KV cache, computing what `edgeforge-runtime` computes:
//! RMSNorm (eps from the config), RoPE on adjacent pairs (dims 2i, 2i+1; cos/sin tables computed in f64 as
//! the runtime does, gathered by position), grouped-query attention with causal masking over past + new
//! positions, SiLU-gated MLP, tied or separate output head. Standard ONNX ops only, except quantized
//! weights: `com.microsoft.MatMulNBits` for linears, `com.microsoft.GatherBlockQuantized` for the embedding.
//!
//! Hidden states stay `[batch, seq, n_embd]`; `past_seq` is read from the shape of `past_key_values.0.key`;
//! query i attends cache slots 0..=past_seq + i whose `attention_mask` is set; RoPE positions are
//! `cumsum(attention_mask) − 1` (= past_seq + i without padding). GQA is done without copying the cache:
//! queries are viewed as `[batch, n_kv_heads, group, seq, head_dim]` against keys
//! `[batch, n_kv_heads, 1, total, head_dim]` (query head h uses KV head h / group, as in the runtime).

use edgeforge_core::arch::block_shape;
use edgeforge_core::{Model, Tensor, TensorData};

use super::builder::{to_i64, Attr, Dim, ElemType, GraphBuilder};
use super::proto::onnx as pb;
use super::weights::{linear_weight, LinearWeight, NBitsWeight, ZeroPoints};
use crate::error::{ExportError, Result};

pub const INPUT_IDS: &str = "input_ids";
pub const ATTENTION_MASK: &str = "attention_mask";
pub const LOGITS: &str = "logits";
const MS_DOMAIN: &str = "com.microsoft";

pub fn past_key(l: usize) -> String {
    format!("past_key_values.{l}.key")
}
pub fn past_value(l: usize) -> String {
    format!("past_key_values.{l}.value")
}
pub fn present_key(l: usize) -> String {
    format!("present.{l}.key")
}
pub fn present_value(l: usize) -> String {
    format!("present.{l}.value")
}

/// How each weight went into the graph, for the summary.
#[derive(Debug, Clone, Default)]
pub struct WeightReport {
    /// Linear weights written as MatMulNBits (`name: int4 block 32`).
    pub nbits: Vec<String>,
    /// Embedding tables gathered with GatherBlockQuantized.
    pub gather_nbits: Vec<String>,
    /// Weights written as f32 (norms not listed).
    pub float: Vec<String>,
    /// Why a quantized tensor went in as floats, and other things a reader should know.
    pub notes: Vec<String>,
}

/// The per-graph values every block reads: RoPE cos/sin for the new positions and the attention mask.
struct Shared {
    cos: String,
    sin: String,
    /// bool `[batch, 1, 1, seq, total]`: key position may be attended by the query position.
    allowed: String,
    neg_big: String,
    eps: String,
}

/// Where the logits come from.
enum Head {
    /// The tied f32 `[n_embd, vocab]` table the embedding also gathers from.
    Table(String),
    /// A tied quantized head whose scales the embedding's GatherBlockQuantized also reads.
    Quantized(NBitsWeight, NBitsParams),
    /// Its own weight.
    Linear(LinearWeight),
}

struct NBitsParams {
    scales: String,
    zero_points: Option<String>,
}

fn hint_of(name: &str) -> String {
    name.trim_end_matches(".weight").replace('.', "_")
}

struct Ctx<'a> {
    g: GraphBuilder,
    model: &'a Model,
    report: WeightReport,
}

impl Ctx<'_> {
    /// `x · Wᵀ` for our `[N, K]` weight `name`, through MatMulNBits when its format maps.
    fn linear(&mut self, x: &str, name: &str) -> Result<String> {
        let t = self.model.tensor(name)?;
        let weight = linear_weight(name, t)?;
        Ok(self.emit_linear(x, name, weight))
    }

    fn emit_linear(&mut self, x: &str, name: &str, weight: LinearWeight) -> String {
        match weight {
            LinearWeight::NBits(w) => {
                let params = self.nbits_params(name, &w);
                self.matmul_nbits(x, name, w, &params)
            }
            LinearWeight::Float { k_by_n, n, k, why } => {
                let w = self.g.initializer_f32(name, &[k, n], &k_by_n);
                self.report.float.push(name.to_owned());
                self.report.notes.extend(why);
                self.g.op("MatMul", &[x, &w], vec![], &hint_of(name))
            }
        }
    }

    /// The scales (and zero points) of a block-quantized weight as initializers; MatMulNBits and
    /// GatherBlockQuantized take the same `[N, k_blocks]` scales and packed zero points, so a tied
    /// embedding/head stores them once.
    fn nbits_params(&mut self, name: &str, w: &NBitsWeight) -> NBitsParams {
        let scales = self.g.initializer_f32(&format!("{name}.scales"), &[w.n, w.k_blocks()], &w.scales);
        let zero_points = w.zero_points.as_ref().map(|z| match z {
            ZeroPoints::Packed(z) => {
                let cols = z.len() / w.n.max(1);
                self.g.initializer(&format!("{name}.zero_points"), ElemType::U8, &[w.n, cols], z.clone())
            }
            ZeroPoints::Float(z) => self.g.initializer_f32(&format!("{name}.zero_points"), &[w.n, w.k_blocks()], z),
        });
        NBitsParams { scales, zero_points }
    }

    fn matmul_nbits(&mut self, x: &str, name: &str, w: NBitsWeight, params: &NBitsParams) -> String {
        let (k_blocks, blob) = (w.k_blocks(), w.block_size * usize::from(w.bits) / 8);
        let b = self.g.initializer(&format!("{name}.qweight"), ElemType::U8, &[w.n, k_blocks, blob], w.packed);
        let mut inputs = vec![x, b.as_str(), params.scales.as_str()];
        inputs.extend(params.zero_points.as_deref());
        let out = self.g.fresh(&hint_of(name));
        let attrs = vec![("K", Attr::Int(to_i64(w.k))), ("N", Attr::Int(to_i64(w.n))), ("bits", Attr::Int(i64::from(w.bits))), ("block_size", Attr::Int(to_i64(w.block_size)))];
        self.g.node(MS_DOMAIN, "MatMulNBits", &inputs, &[out.as_str()], attrs);
        let asym = if params.zero_points.is_some() { " asym" } else { "" };
        self.report.nbits.push(format!("{name}: int{} block {}{asym}", w.bits, w.block_size));
        out
    }

    /// Embedding rows straight from the codes (`com.microsoft.GatherBlockQuantized`, uint8 data packed along
    /// the row, blocks along the row): the table stays at 4 or 8 bits instead of f32. Only when the block
    /// size divides the row, since the data is `[vocab, n_embd·bits/8]` without padding.
    fn gather_nbits(&mut self, name: &str, w: &NBitsWeight, params: &NBitsParams) -> String {
        let data = self.g.initializer(&format!("{name}.gather_data"), ElemType::U8, &[w.n, w.k * usize::from(w.bits) / 8], w.packed.clone());
        let mut inputs = vec![data.as_str(), INPUT_IDS, params.scales.as_str()];
        inputs.extend(params.zero_points.as_deref());
        let out = self.g.fresh("embd");
        let attrs = vec![("gather_axis", Attr::Int(0)), ("quantize_axis", Attr::Int(1)), ("bits", Attr::Int(i64::from(w.bits))), ("block_size", Attr::Int(to_i64(w.block_size)))];
        self.g.node(MS_DOMAIN, "GatherBlockQuantized", &inputs, &[out.as_str()], attrs);
        self.report.gather_nbits.push(format!("{name}: int{} block {}{}", w.bits, w.block_size, if params.zero_points.is_some() { " asym" } else { "" }));
        out
    }

    /// The embedding as an f32 `[vocab, n_embd]` table (dequantized when it is not float) and its Gather.
    fn embed_float(&mut self, embd: &Tensor, table_name: &str) -> Result<String> {
        let c = &self.model.config;
        let values = embd.to_f32("token_embd.weight")?;
        let table = self.g.initializer_f32(table_name, &[c.vocab_size, c.n_embd], &values);
        self.report.float.push(format!("{table_name} (embedding gather)"));
        if !embd.is_float() {
            self.report.notes.push(format!("token_embd.weight ({}): the embedding gather reads it dequantized to f32", embd.format_name()));
        }
        Ok(self.g.op("Gather", &[&table, INPUT_IDS], vec![("axis", Attr::Int(0))], "embd"))
    }

    /// `x / sqrt(mean(x²) + eps) · weight` over the last axis.
    fn rms_norm(&mut self, x: &str, weight_name: &str, shared: &Shared) -> Result<String> {
        let e = self.model.config.n_embd;
        let w = self.model.tensor_f32(weight_name, &[e])?;
        let w = self.g.initializer_f32(weight_name, &[e], &w);
        let axes = self.g.const_i64("axes_last", &[-1]);
        let sq = self.g.op("Mul", &[x, x], vec![], "sq");
        let mean = self.g.op("ReduceMean", &[&sq, &axes], vec![("keepdims", Attr::Int(1))], "mean_sq");
        let plus = self.g.op("Add", &[&mean, &shared.eps], vec![], "mean_sq_eps");
        let rms = self.g.op("Sqrt", &[&plus], vec![], "rms");
        let normed = self.g.op("Div", &[x, &rms], vec![], "normed");
        Ok(self.g.op("Mul", &[&normed, &w], vec![], "norm_out"))
    }

    /// RoPE on `x` `[batch, seq, heads·head_dim]` → `[batch, heads, seq, head_dim]`.
    fn rope(&mut self, x: &str, heads: usize, shared: &Shared) -> String {
        let hd = self.model.config.head_dim as i64;
        let h = heads as i64;
        let pairs_shape = self.g.const_i64("pairs_shape", &[0, 0, h, hd / 2, 2]);
        let pairs = self.g.op("Reshape", &[x, &pairs_shape], vec![], "pairs");
        let split = self.g.const_i64("split_1_1", &[1, 1]);
        let (a, b) = (self.g.fresh("even"), self.g.fresh("odd"));
        self.g.node("", "Split", &[&pairs, &split], &[&a, &b], vec![("axis", Attr::Int(-1))]);
        let ac = self.g.op("Mul", &[&a, &shared.cos], vec![], "a_cos");
        let bs = self.g.op("Mul", &[&b, &shared.sin], vec![], "b_sin");
        let as_ = self.g.op("Mul", &[&a, &shared.sin], vec![], "a_sin");
        let bc = self.g.op("Mul", &[&b, &shared.cos], vec![], "b_cos");
        let even = self.g.op("Sub", &[&ac, &bs], vec![], "rot_even");
        let odd = self.g.op("Add", &[&as_, &bc], vec![], "rot_odd");
        let joined = self.g.op("Concat", &[&even, &odd], vec![("axis", Attr::Int(-1))], "rot");
        self.heads_first(&joined, heads)
    }

    /// `[batch, seq, heads·head_dim]` (or any shape with those elements per position) →
    /// `[batch, heads, seq, head_dim]`.
    fn heads_first(&mut self, x: &str, heads: usize) -> String {
        let shape = self.g.const_i64("heads_shape", &[0, 0, heads as i64, self.model.config.head_dim as i64]);
        let split = self.g.op("Reshape", &[x, &shape], vec![], "heads");
        self.g.op("Transpose", &[&split], vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))], "heads_t")
    }

    fn block(&mut self, l: usize, x: &str, shared: &Shared) -> Result<String> {
        let shape = block_shape(self.model, l)?;
        let (h, kvh, hd) = (shape.n_heads, shape.n_kv_heads, self.model.config.head_dim);
        let group = h / kvh.max(1);
        let name = |s: &str| format!("blk.{l}.{s}.weight");

        let xn = self.rms_norm(x, &name("attn_norm"), shared)?;
        let q = self.linear(&xn, &name("attn_q"))?;
        let k = self.linear(&xn, &name("attn_k"))?;
        let v = self.linear(&xn, &name("attn_v"))?;
        let q = self.rope(&q, h, shared);
        let k = self.rope(&k, kvh, shared);
        let v = self.heads_first(&v, kvh);
        let (pk, pv) = (present_key(l), present_value(l));
        self.g.node("", "Concat", &[&past_key(l), &k], &[&pk], vec![("axis", Attr::Int(2))]);
        self.g.node("", "Concat", &[&past_value(l), &v], &[&pv], vec![("axis", Attr::Int(2))]);

        let q5_shape = self.g.const_i64("q_groups_shape", &[0, kvh as i64, group as i64, -1, hd as i64]);
        let q5 = self.g.op("Reshape", &[&q, &q5_shape], vec![], "q_groups");
        let kt = self.g.op("Transpose", &[&pk], vec![("perm", Attr::Ints(vec![0, 1, 3, 2]))], "k_t");
        let axis2 = self.g.const_i64("axis_2", &[2]);
        let kt5 = self.g.op("Unsqueeze", &[&kt, &axis2], vec![], "k_t5");
        let v5 = self.g.op("Unsqueeze", &[&pv, &axis2], vec![], "v5");
        let scores = self.g.op("MatMul", &[&q5, &kt5], vec![], "scores");
        let scale = self.g.scalar_f32("attn_scale", 1.0 / (hd as f32).sqrt());
        let scaled = self.g.op("Mul", &[&scores, &scale], vec![], "scores_scaled");
        let masked = self.g.op("Where", &[&shared.allowed, &scaled, &shared.neg_big], vec![], "scores_masked");
        let probs = self.g.op("Softmax", &[&masked], vec![("axis", Attr::Int(-1))], "probs");
        let ctx5 = self.g.op("MatMul", &[&probs, &v5], vec![], "attn_ctx5");
        let ctx_shape = self.g.const_i64("ctx_heads_shape", &[0, h as i64, -1, hd as i64]);
        let ctx4 = self.g.op("Reshape", &[&ctx5, &ctx_shape], vec![], "attn_ctx4");
        let ctx_t = self.g.op("Transpose", &[&ctx4], vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))], "attn_ctx_t");
        let flat_shape = self.g.const_i64("ctx_flat_shape", &[0, 0, (h * hd) as i64]);
        let ctx = self.g.op("Reshape", &[&ctx_t, &flat_shape], vec![], "attn_ctx");
        let o = self.linear(&ctx, &name("attn_output"))?;
        let x = self.g.op("Add", &[x, &o], vec![], "resid_attn");

        let xn = self.rms_norm(&x, &name("ffn_norm"), shared)?;
        let gate = self.linear(&xn, &name("ffn_gate"))?;
        let up = self.linear(&xn, &name("ffn_up"))?;
        let act = match self.model.config.activation {
            edgeforge_core::Activation::Silu => {
                let sig = self.g.op("Sigmoid", &[&gate], vec![], "gate_sigmoid");
                self.g.op("Mul", &[&gate, &sig], vec![], "gate_silu")
            }
            edgeforge_core::Activation::Relu => self.g.op("Relu", &[&gate], vec![], "gate_relu"),
            edgeforge_core::Activation::GeluTanh => {
                return Err(ExportError::FamilyUnsupported { format: "ONNX", family: self.model.config.features.family })
            }
        };
        let hidden = self.g.op("Mul", &[&act, &up], vec![], "ffn_hidden");
        let down = self.linear(&hidden, &name("ffn_down"))?;
        Ok(self.g.op("Add", &[&x, &down], vec![], "resid_ffn"))
    }

    /// Positions, RoPE tables and the attention mask, built once from the input shapes.
    fn shared(&mut self, max_positions: usize) -> Shared {
        let c = &self.model.config;
        let (hd, half) = (c.head_dim, c.head_dim / 2);
        let g = &mut self.g;
        let past = g.op("Shape", &[&past_key(0)], vec![("start", Attr::Int(2)), ("end", Attr::Int(3))], "past_len");
        let seq = g.op("Shape", &[INPUT_IDS], vec![("start", Attr::Int(1)), ("end", Attr::Int(2))], "seq_len");
        let total = g.op("Add", &[&past, &seq], vec![], "total_len");
        let past_s = g.op("Squeeze", &[&past], vec![], "past_len_s");
        let total_s = g.op("Squeeze", &[&total], vec![], "total_len_s");
        let zero = g.fresh("zero_i64");
        g.initializer(&zero, ElemType::I64, &[], 0i64.to_le_bytes().to_vec());
        let one = g.fresh("one_i64");
        g.initializer(&one, ElemType::I64, &[], 1i64.to_le_bytes().to_vec());
        // Causal masking is by index: query i of this call is slot past + i of the cache.
        let positions = g.op("Range", &[&past_s, &total_s, &one], vec![], "query_slots");
        let key_positions = g.op("Range", &[&zero, &total_s, &one], vec![], "key_slots");
        // RoPE positions count the attended tokens before each one (cumsum(attention_mask) − 1), as
        // onnxruntime-genai and transformers do: a left-padded row gets the positions it would have unpadded.
        // Without padding this is past + i, what our runtime uses. Pads get position 0 (they are masked).
        let mask_count = g.op("CumSum", &[ATTENTION_MASK, &one], vec![], "mask_cumsum");
        let minus_one = g.op("Sub", &[&mask_count, &one], vec![], "token_positions_all");
        let clamped = g.op("Max", &[&minus_one, &zero], vec![], "token_positions_clamped");
        let axis1 = g.const_i64("axis_1", &[1]);
        let rope_positions = g.op("Slice", &[&clamped, &past, &total, &axis1], vec![], "rope_positions");

        // cos/sin of pos · base^(−2i/head_dim) in f64, like the runtime's table.
        let (mut cos, mut sin) = (Vec::with_capacity(max_positions * half), Vec::with_capacity(max_positions * half));
        for p in 0..max_positions {
            for i in 0..half {
                let theta = p as f64 * f64::from(c.rope_base).powf(-2.0 * i as f64 / hd as f64);
                cos.push(theta.cos() as f32);
                sin.push(theta.sin() as f32);
            }
        }
        let cos_table = g.initializer_f32("rope.cos", &[max_positions, half], &cos);
        let sin_table = g.initializer_f32("rope.sin", &[max_positions, half], &sin);
        // [batch, seq, half] → [batch, seq, 1 (heads), half, 1 (pair)].
        let table_shape = g.const_i64("rope_shape", &[0, 0, 1, half as i64, 1]);
        let cos_rows = g.op("Gather", &[&cos_table, &rope_positions], vec![("axis", Attr::Int(0))], "cos_rows");
        let sin_rows = g.op("Gather", &[&sin_table, &rope_positions], vec![("axis", Attr::Int(0))], "sin_rows");
        let cos = g.op("Reshape", &[&cos_rows, &table_shape], vec![], "cos");
        let sin = g.op("Reshape", &[&sin_rows, &table_shape], vec![], "sin");

        // Query at position p sees keys 0..=p whose attention_mask entry is non-zero.
        let query_col = g.op("Unsqueeze", &[&positions, &axis1], vec![], "query_slots_col");
        let causal = g.op("LessOrEqual", &[&key_positions, &query_col], vec![], "causal");
        let mask_bool = g.op("Cast", &[ATTENTION_MASK], vec![("to", Attr::Int(ElemType::Bool.code().into()))], "mask_bool");
        let axes123 = g.const_i64("axes_1_2_3", &[1, 2, 3]);
        let mask5 = g.op("Unsqueeze", &[&mask_bool, &axes123], vec![], "mask5");
        let allowed = g.op("And", &[&causal, &mask5], vec![], "allowed");
        // The most negative float, not −inf: a fully masked row then softmaxes to uniform, not NaN.
        let neg_big = g.scalar_f32("neg_big", f32::MIN);
        let eps = g.scalar_f32("rms_eps", c.rms_eps);
        Shared { cos, sin, allowed, neg_big, eps }
    }
}

/// Build the decoder graph of `model` with RoPE tables for `max_positions` positions.
pub fn decoder_graph(model: &Model, max_positions: usize) -> Result<(pb::GraphProto, WeightReport)> {
    let c = &model.config;
    if c.n_layers == 0 || !c.head_dim.is_multiple_of(2) || c.head_dim == 0 {
        return Err(ExportError::Unsupported { what: format!("ONNX export needs at least one block and an even head_dim (got {} blocks, head_dim {})", c.n_layers, c.head_dim) });
    }
    let mut cx = Ctx { g: GraphBuilder::default(), model, report: WeightReport::default() };
    cx.g.input(INPUT_IDS, ElemType::I64, &[Dim::Named("batch_size"), Dim::Named("sequence_length")]);
    cx.g.input(ATTENTION_MASK, ElemType::I64, &[Dim::Named("batch_size"), Dim::Named("total_sequence_length")]);
    let shapes = (0..c.n_layers).map(|l| block_shape(model, l)).collect::<edgeforge_core::Result<Vec<_>>>()?;
    for (l, s) in shapes.iter().enumerate() {
        let dims = || [Dim::Named("batch_size"), Dim::Fixed(s.n_kv_heads), Dim::Named("past_sequence_length"), Dim::Fixed(c.head_dim)];
        cx.g.input(&past_key(l), ElemType::F32, &dims());
        cx.g.input(&past_value(l), ElemType::F32, &dims());
    }
    cx.g.output(LOGITS, ElemType::F32, &[Dim::Named("batch_size"), Dim::Named("sequence_length"), Dim::Fixed(c.vocab_size)]);
    for (l, s) in shapes.iter().enumerate() {
        let dims = || [Dim::Named("batch_size"), Dim::Fixed(s.n_kv_heads), Dim::Named("total_sequence_length"), Dim::Fixed(c.head_dim)];
        cx.g.output(&present_key(l), ElemType::F32, &dims());
        cx.g.output(&present_value(l), ElemType::F32, &dims());
    }

    let shared = cx.shared(max_positions.max(1));

    // Token embedding and output head. A tied float head is stored once, as [n_embd, vocab] for MatMul, and
    // the embedding gathers its columns; quantized tables are gathered from their codes (a tied one shares
    // its scales with the head); otherwise the embedding is an f32 [vocab, n_embd] table.
    let embd = model.tensor("token_embd.weight")?;
    let (vocab, e) = (c.vocab_size, c.n_embd);
    if embd.shape != [vocab, e] {
        return Err(ExportError::Unsupported { what: format!("token_embd.weight: expected [{vocab}, {e}], got {:?}", embd.shape) });
    }
    // GatherBlockQuantized reads unpadded rows and zero points of the data's type only.
    let gatherable = |w: &NBitsWeight| w.k.is_multiple_of(w.block_size) && !matches!(w.zero_points, Some(ZeroPoints::Float(_)));
    let head_name = if c.tied_embeddings { "token_embd.weight" } else { "output.weight" };
    let head_weight = linear_weight(head_name, model.tensor(head_name)?)?;
    let (x, head) = if c.tied_embeddings {
        match head_weight {
            LinearWeight::Float { k_by_n, n, k, why } => {
                let table = cx.g.initializer_f32("token_embd.weight", &[k, n], &k_by_n);
                cx.report.float.push("token_embd.weight (embedding and tied head)".to_owned());
                cx.report.notes.extend(why);
                let cols = cx.g.op("Gather", &[&table, INPUT_IDS], vec![("axis", Attr::Int(1))], "embd_cols");
                let x = cx.g.op("Transpose", &[&cols], vec![("perm", Attr::Ints(vec![1, 2, 0]))], "embd");
                (x, Head::Table(table))
            }
            LinearWeight::NBits(w) if gatherable(&w) => {
                let params = cx.nbits_params(head_name, &w);
                let x = cx.gather_nbits(head_name, &w, &params);
                (x, Head::Quantized(w, params))
            }
            other => (cx.embed_float(embd, "token_embd.weight.gather")?, Head::Linear(other)),
        }
    } else {
        let quantized = match &embd.data {
            TensorData::Quantized(_) => Some(linear_weight("token_embd.weight", embd)?),
            _ => None,
        };
        let x = match quantized {
            Some(LinearWeight::NBits(w)) if gatherable(&w) => {
                let params = cx.nbits_params("token_embd.weight", &w);
                cx.gather_nbits("token_embd.weight", &w, &params)
            }
            _ => cx.embed_float(embd, "token_embd.weight")?,
        };
        (x, Head::Linear(head_weight))
    };

    let mut x = x;
    for l in 0..c.n_layers {
        x = cx.block(l, &x, &shared)?;
    }
    let xn = cx.rms_norm(&x, "output_norm.weight", &shared)?;
    let logits = match head {
        Head::Table(table) => cx.g.op("MatMul", &[&xn, &table], vec![], "output"),
        Head::Quantized(w, params) => cx.matmul_nbits(&xn, head_name, w, &params),
        Head::Linear(w) => cx.emit_linear(&xn, head_name, w),
    };
    cx.g.rename(&logits, LOGITS);
    let Ctx { g, report, .. } = cx;
    Ok((g.finish("edgeforge_llama_decoder"), report))
}
