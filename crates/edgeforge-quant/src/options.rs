//! Option types shared by quantization passes. Ranges are checked while the recipe is parsed, so a bad value
//! is reported at its own line and column.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use edgeforge_core::quantized::QuantFormat;
use edgeforge_core::scheme::Scheme;

/// Bits per weight: 3, 4 or 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "u8", into = "u8")]
#[schemars(with = "u8")]
pub struct Bits(u8);

impl TryFrom<u8> for Bits {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            3 | 4 | 8 => Ok(Bits(v)),
            _ => Err(format!("bits = {v} is not supported: use 3, 4 or 8")),
        }
    }
}

impl From<Bits> for u8 {
    fn from(b: Bits) -> u8 {
        b.0
    }
}

impl Bits {
    /// 4 bits: what a pass that names only a block `format` uses for any plain-grid override.
    pub const FOUR: Bits = Bits(4);

    pub fn get(self) -> u8 {
        self.0
    }
}

/// A ggml block type a quantizer writes directly, spelled as llama.cpp's types: `q4_0`, `q4_1`, `iq4_nl`,
/// `q5_0`, `q5_1`, `q8_0`, `q4_k`, `q5_k`, `q6_k` (the table is `edgeforge_core::scheme`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String")]
pub struct SchemeName(pub Scheme);

impl TryFrom<String> for SchemeName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Scheme::from_name(&s).map(SchemeName).ok_or_else(|| {
            let names: Vec<&str> = Scheme::ALL.iter().map(|s| s.name()).collect();
            format!("format {s:?} is not a block type edgeforge writes: use one of {}", names.join(", "))
        })
    }
}

impl From<SchemeName> for String {
    fn from(s: SchemeName) -> String {
        s.0.name().to_owned()
    }
}

/// What one tensor is quantized to: one of our integer grids (bits, group size, symmetric), or a ggml
/// block scheme.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    Grid(QuantFormat),
    Scheme(Scheme),
}

/// Elements sharing one scale along a row: 32, 64, 128 or 256, or `per-channel` (one scale per output row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "GroupSizeRepr", into = "GroupSizeRepr")]
#[schemars(with = "GroupSizeRepr")]
pub enum GroupSize {
    PerChannel,
    Elements(usize),
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum GroupSizeRepr {
    Elements(u64),
    Named(String),
}

impl TryFrom<GroupSizeRepr> for GroupSize {
    type Error = String;
    fn try_from(v: GroupSizeRepr) -> Result<Self, String> {
        match v {
            GroupSizeRepr::Elements(n @ (32 | 64 | 128 | 256)) => Ok(GroupSize::Elements(n as usize)),
            GroupSizeRepr::Elements(n) => Err(format!("group_size = {n} is not supported: use 32, 64, 128, 256 or per-channel")),
            GroupSizeRepr::Named(s) if s == "per-channel" => Ok(GroupSize::PerChannel),
            GroupSizeRepr::Named(s) => Err(format!("group_size = {s:?} is not supported: use 32, 64, 128, 256 or per-channel")),
        }
    }
}

impl From<GroupSize> for GroupSizeRepr {
    fn from(g: GroupSize) -> Self {
        match g {
            GroupSize::PerChannel => GroupSizeRepr::Named("per-channel".into()),
            GroupSize::Elements(n) => GroupSizeRepr::Elements(n as u64),
        }
    }
}

impl GroupSize {
    /// Elements per group for rows of `row_len`.
    pub fn for_row(self, row_len: usize) -> usize {
        match self {
            GroupSize::PerChannel => row_len,
            GroupSize::Elements(n) => n,
        }
    }
}

/// A glob over canonical GGUF tensor names (`blk.*.attn_v.weight`), checked when the recipe is parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String")]
pub struct TensorGlob(String);

impl TryFrom<String> for TensorGlob {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        glob::Pattern::new(&s).map_err(|e| format!("{s:?} is not a valid glob: {e}"))?;
        Ok(TensorGlob(s))
    }
}

impl From<TensorGlob> for String {
    fn from(g: TensorGlob) -> String {
        g.0
    }
}

impl TensorGlob {
    pub fn pattern(&self) -> glob::Pattern {
        // Checked at construction, so this cannot fail; fall back to matching nothing.
        glob::Pattern::new(&self.0).unwrap_or_else(|_| glob::Pattern::new("[]").unwrap_or_default())
    }
}

/// The default `ignore` list of quantization passes: the embedding and the (possibly tied) output head.
pub fn default_ignore() -> Vec<TensorGlob> {
    ["token_embd.weight", "output.weight"].iter().filter_map(|s| TensorGlob::try_from((*s).to_owned()).ok()).collect()
}

/// A group may not be longer than a row; one that does not divide a row leaves a shorter last group.
pub fn group_size_issues(group: GroupSize, config: &edgeforge_core::ModelConfig) -> Vec<edgeforge_core::pass::OptionIssue> {
    let GroupSize::Elements(g) = group else { return Vec::new() };
    [("n_embd", config.n_embd), ("attention width", config.n_heads * config.head_dim), ("feed-forward width", config.n_ff)]
        .into_iter()
        .filter(|(_, len)| *len < g)
        .map(|(what, len)| edgeforge_core::pass::OptionIssue {
            field: "group_size",
            message: format!("group_size {g} is longer than the model's {what} ({len}); use a smaller group or per-channel"),
        })
        .collect()
}

/// A per-tensor exception to a pass's format (mixed precision), e.g. keep every `ffn_down` at 8 bits:
/// `{tensors: "blk.*.ffn_down.weight", bits: 8}`. Fields left out keep the pass's value; the first rule
/// whose glob matches a tensor's name wins.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FormatOverride {
    /// Glob over GGUF tensor names.
    pub tensors: TensorGlob,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits: Option<Bits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_size: Option<GroupSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symmetric: Option<bool>,
    /// A ggml block type for these tensors (`q5_0`, `iq4_nl`, ...), instead of bits/group_size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<SchemeName>,
}

/// A pass's format and its per-tensor exceptions.
#[derive(Debug, Clone, Copy)]
pub struct FormatPlan<'a> {
    pub bits: Bits,
    pub group_size: GroupSize,
    pub symmetric: bool,
    pub overrides: &'a [FormatOverride],
    /// The pass's block scheme, when it names one (it then wins over bits/group_size).
    pub scheme: Option<Scheme>,
}

impl FormatPlan<'_> {
    /// The format of tensor `name` with rows of `row_len`.
    pub fn format_for(&self, name: &str, row_len: usize) -> edgeforge_core::quantized::QuantFormat {
        let rule = self.overrides.iter().find(|o| o.tensors.pattern().matches(name));
        let bits = rule.and_then(|r| r.bits).unwrap_or(self.bits);
        let group = rule.and_then(|r| r.group_size).unwrap_or(self.group_size);
        let symmetric = rule.and_then(|r| r.symmetric).unwrap_or(self.symmetric);
        edgeforge_core::quantized::QuantFormat { bits: bits.get(), group_size: group.for_row(row_len), symmetric }
    }

    /// The target of tensor `name` with rows of `row_len`: an override's `format`, else its grid fields,
    /// else the pass's scheme, else the pass's grid. A K-quant scheme on rows that are not a whole number
    /// of 256-element blocks falls back as llama-quantize does (Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0).
    pub fn target_for(&self, name: &str, row_len: usize) -> Target {
        let rule = self.overrides.iter().find(|o| o.tensors.pattern().matches(name));
        let scheme = match rule {
            Some(FormatOverride { format: Some(f), .. }) => Some(f.0),
            Some(r) if r.bits.is_some() || r.group_size.is_some() || r.symmetric.is_some() => None,
            _ => self.scheme,
        };
        match scheme.and_then(|s| s.for_row(row_len)) {
            Some(s) => Target::Scheme(s),
            None => Target::Grid(self.format_for(name, row_len)),
        }
    }

    /// Group sizes of the pass and of every override, checked against the model's widths.
    pub fn issues(&self, config: &edgeforge_core::ModelConfig) -> Vec<edgeforge_core::pass::OptionIssue> {
        let mut issues = group_size_issues(self.group_size, config);
        for o in self.overrides {
            if let Some(g) = o.group_size {
                for mut issue in group_size_issues(g, config) {
                    issue.field = "overrides";
                    issue.message = format!("override for {}: {}", String::from(o.tensors.clone()), issue.message);
                    issues.push(issue);
                }
            }
        }
        issues
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_override_wins_and_unset_fields_keep_the_pass_value() {
        let rule = |glob: &str, bits: Option<u8>, group: Option<GroupSize>| FormatOverride {
            tensors: TensorGlob::try_from(glob.to_owned()).unwrap(),
            bits: bits.map(|b| Bits::try_from(b).unwrap()),
            group_size: group,
            symmetric: None,
            format: None,
        };
        let overrides = [rule("blk.0.*", Some(8), None), rule("blk.*.ffn_down.weight", None, Some(GroupSize::PerChannel))];
        let plan = FormatPlan { bits: Bits(4), group_size: GroupSize::Elements(64), symmetric: true, overrides: &overrides, scheme: None };
        let f = plan.format_for("blk.0.ffn_down.weight", 1536);
        assert_eq!((f.bits, f.group_size), (8, 64));
        let f = plan.format_for("blk.3.ffn_down.weight", 1536);
        assert_eq!((f.bits, f.group_size), (4, 1536));
        let f = plan.format_for("blk.3.attn_q.weight", 576);
        assert_eq!((f.bits, f.group_size, f.symmetric), (4, 64, true));
    }
}
