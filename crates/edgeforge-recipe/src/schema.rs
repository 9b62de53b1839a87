//! The recipe file, as typed data. Every struct refuses unknown keys; value ranges are checked while
//! parsing (newtypes with `try_from`), so errors point at the offending line and column.
//!
//! ```yaml
//! version: 1
//! model: smollm2-135m-instruct          # a known name (fetched, sha256-checked) or a path
//! calibration: { dataset: wikitext-2-valid, samples: 128, seq_len: 512, seed: 0 }
//! passes:
//!   - pass: quantize-rtn
//!     bits: 4
//!     group_size: 64
//! eval:
//!   perplexity: { dataset: wikitext-2-test, ctx: 512, chunks: 25 }
//!   latency: { prompt_tokens: 128, gen_tokens: 64, threads: 2, repeats: 5 }
//!   kld: { dataset: wikitext-2-test, ctx: 512, chunks: 25 }   # against the input model
//! targets:
//!   - { format: gguf, profile: raspberry-pi-5 }
//! gates: { baseline: input, max_ppl_increase_pct: 8.0 }
//! ```

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use crate::registry::PassSpec;

/// A positive whole number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "i64", into = "u64")]
#[schemars(with = "u64")]
pub struct Positive(u64);

impl TryFrom<i64> for Positive {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        if v > 0 {
            Ok(Positive(v as u64))
        } else {
            Err(format!("{v} is not allowed here: expected a positive whole number"))
        }
    }
}

impl From<Positive> for u64 {
    fn from(p: Positive) -> u64 {
        p.0
    }
}

impl Positive {
    pub fn get(self) -> usize {
        self.0 as usize
    }
}

/// A non-negative finite number (percentages, ratios).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "f64", into = "f64")]
#[schemars(with = "f64")]
pub struct NonNegative(f64);

impl TryFrom<f64> for NonNegative {
    type Error = String;
    fn try_from(v: f64) -> Result<Self, String> {
        if v.is_finite() && v >= 0.0 {
            Ok(NonNegative(v))
        } else {
            Err(format!("{v} is not allowed here: expected a number >= 0"))
        }
    }
}

impl From<NonNegative> for f64 {
    fn from(n: NonNegative) -> f64 {
        n.0
    }
}

impl NonNegative {
    pub fn get(self) -> f64 {
        self.0
    }
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Schema version: 1.
    #[serde(default = "one")]
    pub version: u32,
    /// A known model name (`smollm2-135m-instruct`) or a path to a .gguf file or Hugging Face folder,
    /// relative to the recipe file.
    #[schemars(with = "String")]
    pub model: Spanned<String>,
    /// Text for passes that look at activations.
    #[serde(default)]
    pub calibration: Option<Calibration>,
    /// Passes run in order; each is `{pass: NAME, ...options}` with `pass` first.
    #[serde(default)]
    #[schemars(with = "Vec<PassSpec>")]
    pub passes: Vec<Spanned<PassSpec>>,
    #[serde(default)]
    pub eval: Eval,
    #[serde(default)]
    pub targets: Vec<Target>,
    #[serde(default)]
    pub gates: Option<Gates>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// A dataset name from datasets/ or a path.
    #[schemars(with = "String")]
    pub dataset: Spanned<String>,
    pub samples: Positive,
    pub seq_len: Positive,
    #[serde(default)]
    pub seed: u64,
    /// Draw only from this part of the text, `[from, to]` as shares of its bytes cut at line starts (e.g.
    /// `[0.0, 0.9]`, keeping the rest for `eval.perplexity.slice: [0.9, 1.0]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<[f64; 2]>")]
    pub slice: Option<edgeforge_eval::datasets::Slice>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Eval {
    pub perplexity: Option<PerplexityEval>,
    pub latency: Option<LatencyEval>,
    /// KL divergence of the result's next-token distributions from the input model's, and top-1 agreement.
    pub kld: Option<KldEval>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KldEval {
    /// A dataset name from datasets/ or a path.
    #[schemars(with = "String")]
    pub dataset: Spanned<String>,
    pub ctx: Positive,
    /// Chunks to score (default: all).
    #[serde(default)]
    pub chunks: Option<Positive>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PerplexityEval {
    /// A dataset name from datasets/ or a path.
    #[schemars(with = "String")]
    pub dataset: Spanned<String>,
    pub ctx: Positive,
    /// Chunks to score (default: all).
    #[serde(default)]
    pub chunks: Option<Positive>,
    #[serde(default)]
    pub batch: Option<Positive>,
    /// Evaluate one block at a time (weights read from the model file's map and released after each block):
    /// for models larger than memory. Same figure as `batch` equal to `ctx`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// Score only this part of the text, `[from, to]` as shares of its bytes cut at line starts (e.g.
    /// `[0.9, 1.0]`: the last 10%, held out from a `prune-vocab` or calibration slice `[0.0, 0.9]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<[f64; 2]>")]
    pub slice: Option<edgeforge_eval::datasets::Slice>,
    /// Also score the model after every pass (shown per pass in the report): what each step of a pipeline
    /// costs or recovers (e.g. a pruned student before and after distillation).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub after_each_pass: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LatencyEval {
    pub prompt_tokens: Positive,
    pub gen_tokens: Positive,
    #[serde(default)]
    pub threads: Option<Positive>,
    pub repeats: Positive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TargetFormat {
    /// llama.cpp GGUF (quantized tensors that map exactly to Q8_0/Q4_0/Q4_1 stay quantized; others F16).
    Gguf,
    /// A Hugging Face folder with float weights (a plain safetensors checkpoint).
    Safetensors,
    /// ONNX decoder with KV cache for onnxruntime (phones): `model.onnx` (IR 10, opsets 21 and com.microsoft
    /// 1; 4/8-bit weights as MatMulNBits and GatherBlockQuantized, the rest f32), genai_config.json and the
    /// tokenizer files.
    Onnx,
    /// C99 sources for microcontrollers: const weight arrays (int8, int4 two per byte, or floats), a
    /// portable inference source with one static arena, a demo, a Makefile and a README.
    CBundle,
    /// NIR graph (HDF5) of the part a neuromorphic chip runs (the block linears, IF neurons after the MLP
    /// gate) with partition.json saying what stays on the host, the counts checked against the profile.
    Nir,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub format: TargetFormat,
    /// Device profile: a shipped one (raspberry-pi-5, android-phone, esp32-s3, stm32h7, loihi2, akida), a path
    /// to a profile .yaml, or `generic` (no fit check).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub profile: Option<Spanned<String>>,
    /// How float matrices are written: `f32` (default, exact) or `f16` (half the bytes; what llama.cpp's
    /// converter writes for an unquantized model). Quantized tensors keep their formats.
    #[serde(default)]
    pub float: Option<FloatFormat>,
    /// Tokens of context the device must hold (KV cache) in the fit check; default 2048.
    #[serde(default)]
    pub context: Option<Positive>,
}

impl Target {
    /// The profile's name or path as written, if the target names one.
    pub fn profile_name(&self) -> Option<&str> {
        self.profile.as_ref().map(|p| p.value.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FloatFormat {
    F16,
    F32,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Gates {
    /// `input` (the input model under the same eval settings) or a path to a report.json.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub baseline: Option<Spanned<String>>,
    pub max_ppl_increase_pct: Option<NonNegative>,
    pub min_decode_speedup: Option<NonNegative>,
    pub max_size_bytes: Option<Positive>,
}
