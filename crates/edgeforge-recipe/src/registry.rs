//! The one place that knows every pass: its recipe name, its typed options, and how to build it.
//! Adding a pass is a variant here, a line in `PASS_NAMES`, and its options type in its own crate;
//! the runner only ever sees `dyn Pass`.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use edgeforge_core::pass::Pass;
use edgeforge_distill::{ActivationSwap, ActivationSwapOptions, Distill, DistillOptions, TuneScales, TuneScalesOptions};
use edgeforge_prune::{Prune, PruneOptions, PruneVocab, PruneVocabOptions, Reconstruct, ReconstructOptions};
use edgeforge_quant::{Awq, AwqOptions, Gptq, GptqOptions, QuantizeRtn, RtnOptions};

#[derive(Debug, Clone)]
pub enum PassSpec {
    QuantizeRtn(RtnOptions),
    Gptq(GptqOptions),
    Awq(AwqOptions),
    Prune(PruneOptions),
    Reconstruct(ReconstructOptions),
    Distill(DistillOptions),
    ActivationSwap(ActivationSwapOptions),
    TuneScales(TuneScalesOptions),
    PruneVocab(PruneVocabOptions),
}

/// Passes this build can run.
pub const PASS_NAMES: [&str; 9] = ["quantize-rtn", "gptq", "awq", "prune", "reconstruct", "distill", "activation-swap", "tune-scales", "prune-vocab"];
/// Passes described in the docs that later releases add; naming one gives a clear "not yet" error.
const PLANNED: [&str; 0] = [];

impl PassSpec {
    pub fn name(&self) -> &'static str {
        match self {
            PassSpec::QuantizeRtn(_) => "quantize-rtn",
            PassSpec::Gptq(_) => "gptq",
            PassSpec::Awq(_) => "awq",
            PassSpec::Prune(_) => "prune",
            PassSpec::Reconstruct(_) => "reconstruct",
            PassSpec::Distill(_) => "distill",
            PassSpec::ActivationSwap(_) => "activation-swap",
            PassSpec::TuneScales(_) => "tune-scales",
            PassSpec::PruneVocab(_) => "prune-vocab",
        }
    }

    pub fn build(&self) -> Box<dyn Pass> {
        match self {
            PassSpec::QuantizeRtn(o) => Box::new(QuantizeRtn::new(o.clone())),
            PassSpec::Gptq(o) => Box::new(Gptq::new(o.clone())),
            PassSpec::Awq(o) => Box::new(Awq::new(o.clone())),
            PassSpec::Prune(o) => Box::new(Prune::new(o.clone())),
            PassSpec::Reconstruct(o) => Box::new(Reconstruct::new(o.clone())),
            PassSpec::Distill(o) => Box::new(Distill::new(o.clone())),
            PassSpec::ActivationSwap(o) => Box::new(ActivationSwap::new(o.clone())),
            PassSpec::TuneScales(o) => Box::new(TuneScales::new(o.clone())),
            PassSpec::PruneVocab(o) => Box::new(PruneVocab::new(o.clone())),
        }
    }
}

fn unknown_pass(name: &str) -> String {
    if PLANNED.contains(&name) {
        return format!("pass `{name}` is not available in this version (available: {})", PASS_NAMES.join(", "));
    }
    format!("unknown pass `{name}`, expected one of {}", PASS_NAMES.join(", "))
}

struct PassVisitor;

impl<'de> Visitor<'de> for PassVisitor {
    type Value = PassSpec;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a pass entry `{pass: NAME, ...options}`")
    }

    // `pass:` comes first so the rest of the entry can stream straight into the pass's typed options,
    // which keeps every later error at its own line and column.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PassSpec, A::Error> {
        match map.next_key::<String>()?.as_deref() {
            Some("pass") => {}
            Some(other) => {
                return Err(de::Error::custom(format!(
                    "a pass entry must start with `pass: NAME`, found `{other}` first"
                )))
            }
            None => return Err(de::Error::custom("empty pass entry: expected `pass: NAME` followed by its options")),
        }
        let name: String = map.next_value()?;
        let rest = de::value::MapAccessDeserializer::new(map);
        match name.as_str() {
            "quantize-rtn" => Ok(PassSpec::QuantizeRtn(RtnOptions::deserialize(rest)?)),
            "gptq" => Ok(PassSpec::Gptq(GptqOptions::deserialize(rest)?)),
            "awq" => Ok(PassSpec::Awq(AwqOptions::deserialize(rest)?)),
            "prune" => Ok(PassSpec::Prune(PruneOptions::deserialize(rest)?)),
            "reconstruct" => Ok(PassSpec::Reconstruct(ReconstructOptions::deserialize(rest)?)),
            "distill" => Ok(PassSpec::Distill(DistillOptions::deserialize(rest)?)),
            "activation-swap" => Ok(PassSpec::ActivationSwap(ActivationSwapOptions::deserialize(rest)?)),
            "tune-scales" => Ok(PassSpec::TuneScales(TuneScalesOptions::deserialize(rest)?)),
            "prune-vocab" => Ok(PassSpec::PruneVocab(PruneVocabOptions::deserialize(rest)?)),
            other => Err(de::Error::custom(unknown_pass(other))),
        }
    }
}

impl<'de> Deserialize<'de> for PassSpec {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(PassVisitor)
    }
}

impl Serialize for PassSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let options = match self {
            PassSpec::QuantizeRtn(o) => serde_json::to_value(o),
            PassSpec::Gptq(o) => serde_json::to_value(o),
            PassSpec::Awq(o) => serde_json::to_value(o),
            PassSpec::Prune(o) => serde_json::to_value(o),
            PassSpec::Reconstruct(o) => serde_json::to_value(o),
            PassSpec::Distill(o) => serde_json::to_value(o),
            PassSpec::ActivationSwap(o) => serde_json::to_value(o),
            PassSpec::TuneScales(o) => serde_json::to_value(o),
            PassSpec::PruneVocab(o) => serde_json::to_value(o),
        }
        .map_err(serde::ser::Error::custom)?;
        let mut map = serde_json::Map::new();
        map.insert("pass".into(), self.name().into());
        if let serde_json::Value::Object(o) = options {
            map.extend(o);
        }
        map.serialize(s)
    }
}

/// Options schema with a `pass` constant added in front.
fn tagged<T: JsonSchema>(gen: &mut SchemaGenerator, name: &str) -> Schema {
    let mut schema = T::json_schema(gen);
    if let Some(obj) = schema.as_object_mut() {
        if let Some(serde_json::Value::Object(props)) = obj.get_mut("properties") {
            props.insert("pass".into(), serde_json::json!({ "const": name }));
        }
        match obj.get_mut("required") {
            Some(serde_json::Value::Array(req)) => req.insert(0, "pass".into()),
            _ => {
                obj.insert("required".into(), serde_json::json!(["pass"]));
            }
        }
    }
    schema
}

impl JsonSchema for PassSpec {
    fn schema_name() -> Cow<'static, str> {
        "PassSpec".into()
    }

    fn json_schema(gen: &mut SchemaGenerator) -> Schema {
        let variants = vec![tagged::<RtnOptions>(gen, "quantize-rtn"), tagged::<GptqOptions>(gen, "gptq"), tagged::<AwqOptions>(gen, "awq"),
            tagged::<PruneOptions>(gen, "prune"),
            tagged::<ReconstructOptions>(gen, "reconstruct"),
            tagged::<DistillOptions>(gen, "distill"),
            tagged::<ActivationSwapOptions>(gen, "activation-swap"),
            tagged::<TuneScalesOptions>(gen, "tune-scales"),
            tagged::<PruneVocabOptions>(gen, "prune-vocab"),
        ];
        schemars::json_schema!({ "oneOf": variants })
    }
}
