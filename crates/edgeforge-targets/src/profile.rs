//! Target profiles: what a device accepts (formats, weight bit widths) and holds (memory, bandwidth,
//! neuromorphic capacity). Six ship inside the binary; a user adds one by pointing `profile:` at a YAML
//! file of the same shape.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TargetError};

/// The profile name a target gives for no device (no fit check).
pub const GENERIC_PROFILE: &str = "generic";

/// The artifact formats a profile can accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArtifactFormat {
    Gguf,
    Onnx,
    CBundle,
    Nir,
    Safetensors,
}

impl ArtifactFormat {
    pub fn name(self) -> &'static str {
        match self {
            ArtifactFormat::Gguf => "gguf",
            ArtifactFormat::Onnx => "onnx",
            ArtifactFormat::CBundle => "c-bundle",
            ArtifactFormat::Nir => "nir",
            ArtifactFormat::Safetensors => "safetensors",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKind {
    Board,
    Phone,
    Mcu,
    Neuromorphic,
    Host,
    /// Several devices running one GGUF with llama.cpp's RPC backend (`cluster:` lists them).
    Cluster,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    /// Main memory (boards, phones).
    #[serde(default)]
    pub ram_bytes: Option<u64>,
    /// What the model may use of it (OS and app overheads excluded).
    #[serde(default)]
    pub budget_bytes: Option<u64>,
    /// Microcontrollers: where const weights live.
    #[serde(default)]
    pub flash_bytes: Option<u64>,
    #[serde(default)]
    pub sram_bytes: Option<u64>,
    #[serde(default)]
    pub psram_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Neuromorphic {
    pub chips: u64,
    pub neurons_per_chip: u64,
    pub synapses_per_chip: u64,
    pub weight_bits_max: u32,
    pub activation_bits_max: u32,
    /// Largest input vector one dense (fully connected) layer takes, when the device limits it.
    #[serde(default)]
    pub max_fan_in: Option<u64>,
    /// Energy per synaptic operation, picojoules (published figure; see the source).
    #[serde(default)]
    pub synop_energy_pj: Option<f64>,
    #[serde(default)]
    pub synop_energy_source: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub kind: DeviceKind,
    pub formats: Vec<ArtifactFormat>,
    pub weight_bits: Vec<u32>,
    #[serde(default)]
    pub memory: Memory,
    /// Peak memory bandwidth for weight reads, GB/s (roofline decode estimates).
    #[serde(default)]
    pub bandwidth_gb_s: Option<f64>,
    #[serde(default)]
    pub neuromorphic: Option<Neuromorphic>,
    /// `kind: cluster`: the nodes, the head first.
    #[serde(default)]
    pub cluster: Option<crate::cluster::Cluster>,
    #[serde(default)]
    pub sources: Vec<String>,
}

/// The profiles compiled into the binary, as (name, YAML text).
pub const SHIPPED: [(&str, &str); 7] = [
    ("raspberry-pi-5", include_str!("../profiles/raspberry-pi-5.yaml")),
    ("android-phone", include_str!("../profiles/android-phone.yaml")),
    ("esp32-s3", include_str!("../profiles/esp32-s3.yaml")),
    ("stm32h7", include_str!("../profiles/stm32h7.yaml")),
    ("loihi2", include_str!("../profiles/loihi2.yaml")),
    ("akida", include_str!("../profiles/akida.yaml")),
    ("pi5-cluster-2", include_str!("../profiles/pi5-cluster-2.yaml")),
];

pub fn shipped_names() -> Vec<String> {
    SHIPPED.iter().map(|(n, _)| (*n).to_owned()).collect()
}

fn parse(origin: &str, text: &str) -> Result<Profile> {
    let p: Profile = serde_saphyr::from_str(text).map_err(|e| TargetError::Profile { origin: origin.to_owned(), message: e.to_string() })?;
    let bad = |message: String| Err(TargetError::Profile { origin: origin.to_owned(), message });
    if p.formats.is_empty() {
        return bad("`formats` is empty: list what the device runs (gguf, onnx, c-bundle, nir)".into());
    }
    if p.weight_bits.is_empty() || p.weight_bits.iter().any(|b| !(1..=32).contains(b)) {
        return bad(format!("`weight_bits` {:?} must list widths between 1 and 32", p.weight_bits));
    }
    match (&p.kind, &p.cluster) {
        (DeviceKind::Cluster, None) => return bad("`kind: cluster` needs `cluster: { nodes: [...] }` (the head first)".into()),
        (DeviceKind::Cluster, Some(c)) => {
            if let Err(message) = crate::cluster::check(c) {
                return bad(message);
            }
        }
        (_, Some(_)) => return bad("`cluster:` is only for `kind: cluster`".into()),
        _ => {}
    }
    if p.bandwidth_gb_s.is_some_and(|b| !(b.is_finite() && b > 0.0)) {
        return bad("`bandwidth_gb_s` must be a positive number".into());
    }
    Ok(p)
}

/// A shipped profile by name, or a profile YAML file by path (relative paths from `base_dir`).
pub fn load_profile(name_or_path: &str, base_dir: &Path) -> Result<Profile> {
    if let Some((_, text)) = SHIPPED.iter().find(|(n, _)| *n == name_or_path) {
        return parse(&format!("shipped profile {name_or_path}"), text);
    }
    let path = base_dir.join(name_or_path);
    if name_or_path.ends_with(".yaml") || name_or_path.ends_with(".yml") || path.is_file() {
        let text = std::fs::read_to_string(&path).map_err(|e| TargetError::io(&path, e))?;
        return parse(&path.display().to_string(), &text);
    }
    Err(TargetError::UnknownProfile { name: name_or_path.to_owned(), shipped: shipped_names() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_profile_parses_and_is_named_as_its_file() {
        for (name, _) in SHIPPED {
            let p = load_profile(name, Path::new(".")).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(p.name, name);
        }
    }

    #[test]
    fn unknown_names_and_bad_files_say_what_is_wrong() {
        let e = load_profile("raspberry-pi-6", Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("unknown profile `raspberry-pi-6`") && e.contains("raspberry-pi-5"), "{e}");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("b.yaml"), "name: b\ndescription: x\nkind: board\nformats: []\nweight_bits: [8]\n").unwrap_or_else(|e| panic!("{e}"));
        let e = load_profile("b.yaml", dir.path()).unwrap_err().to_string();
        assert!(e.contains("b.yaml") && e.contains("`formats` is empty"), "{e}");
        std::fs::write(dir.path().join("c.yaml"), "name: c\ndescription: x\nkind: toaster\nformats: [gguf]\nweight_bits: [8]\n").unwrap_or_else(|e| panic!("{e}"));
        let e = load_profile("c.yaml", dir.path()).unwrap_err().to_string();
        assert!(e.contains("toaster"), "{e}");
    }
}
