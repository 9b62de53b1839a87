//! From a sweep file to recipe variants: edit the base recipe at each axis path, make its relative paths
//! absolute (the variant recipe lives in the sweep's output folder), and validate every variant before
//! any runs.

use std::path::{Path, PathBuf};

use edgeforge_recipe::diagnostic::{Diagnostic, Place};
use edgeforge_recipe::RecipeError;

use crate::node::Node;
use crate::spec::SweepFile;
use crate::SweepError;

/// One recipe of the sweep.
#[derive(Debug, Clone)]
pub struct Variant {
    /// Folder name under `OUT/variants/`: its index and settings (`03-bits4-group_size32`).
    pub name: String,
    /// The axis settings that make this variant, in axis order.
    pub settings: Vec<(String, Node)>,
    /// Where in the sweep file the variant comes from (a grid axis or a point), for errors.
    pub place: Place,
    /// The variant's recipe text (YAML).
    pub recipe_text: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// `passes[1].bits` → [Key(passes), Index(1), Key(bits)].
fn parse_path(path: &str) -> Result<Vec<Seg>, String> {
    let mut segs = Vec::new();
    for part in path.split('.') {
        if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            // `passes.1.bits`: the form that needs no quotes inside a YAML flow mapping.
            segs.push(Seg::Index(part.parse().map_err(|_| format!("`{path}`: index `{part}` is too large"))?));
            continue;
        }
        let (key, mut rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(format!("`{path}` is not a recipe path: expected keys joined by `.` with optional [index], e.g. passes[0].bits"));
        }
        segs.push(Seg::Key(key.to_owned()));
        while !rest.is_empty() {
            let (idx, after) = rest.split_once(']').ok_or_else(|| format!("`{path}`: `[` without `]`"))?;
            let i = idx.parse::<usize>().map_err(|_| format!("`{path}`: `[{idx}]` is not an index (a whole number >= 0)"))?;
            segs.push(Seg::Index(i));
            rest = after.strip_prefix('[').unwrap_or(after);
            if !after.is_empty() && !after.starts_with('[') {
                return Err(format!("`{path}`: unexpected `{after}` after `]`"));
            }
        }
    }
    Ok(segs)
}

/// Set `root` at `path` to `value`. Missing map keys are created; list indices must exist.
fn set(root: &mut Node, path: &str, value: Node) -> Result<(), String> {
    let segs = parse_path(path)?;
    let mut cur = root;
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        cur = match (seg, cur) {
            (Seg::Key(k), Node::Map(m)) => {
                if !m.iter().any(|(key, _)| key == k) {
                    let fresh = if matches!(segs.get(i + 1), Some(Seg::Index(_))) { Node::Seq(Vec::new()) } else { Node::Map(Vec::new()) };
                    m.push((k.clone(), fresh));
                }
                m.iter_mut().find(|(key, _)| key == k).map(|(_, v)| v).ok_or_else(|| format!("`{path}`: cannot reach `{k}`"))?
            }
            (Seg::Index(n), Node::Seq(v)) => {
                let len = v.len();
                v.get_mut(*n).ok_or_else(|| format!("`{path}`: index {n} is out of range (the recipe has {len} entries there)"))?
            }
            (seg, other) => {
                let want = if matches!(seg, Seg::Key(_)) { "a map" } else { "a list" };
                return Err(format!("`{path}`: the recipe has {} where the path needs {want}", other.short()));
            }
        };
        if last {
            *cur = value;
            return Ok(());
        }
    }
    Err(format!("`{path}` is empty"))
}

/// Strings in the recipe that name an existing file or folder relative to `dir` become absolute paths.
fn absolutize(root: &mut Node, dir: &Path) {
    root.for_each_str(&mut |s: &mut String| {
        let looks_like_path = s.contains('/') || s.contains('.');
        if looks_like_path && !Path::new(s.as_str()).is_absolute() {
            if let Ok(abs) = std::fs::canonicalize(dir.join(s.as_str())) {
                *s = abs.display().to_string();
            }
        }
    });
}

fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' }).collect()
}

fn variant_name(index: usize, settings: &[(String, Node)]) -> String {
    let parts: Vec<String> = settings
        .iter()
        .map(|(path, v)| {
            let key = path.rsplit('.').next().unwrap_or(path);
            sanitize(&format!("{}{}", key.split('[').next().unwrap_or(key), v.short()))
        })
        .collect();
    let mut name = format!("{index:02}-{}", parts.join("-"));
    name.truncate(100);
    name
}

/// Every combination of the grid's axes (in key order), then each point.
fn combinations(sf: &SweepFile) -> Vec<(Vec<(String, Node)>, Place)> {
    let mut out: Vec<(Vec<(String, Node)>, Place)> = Vec::new();
    if !sf.sweep.grid.is_empty() {
        let start = sf.sweep.grid.values().next().map_or(Place::START, |v| Place::from(v.referenced));
        let mut combos: Vec<Vec<(String, Node)>> = vec![Vec::new()];
        for (key, values) in &sf.sweep.grid {
            combos = combos.into_iter().flat_map(|c| values.value.iter().map(move |v| [c.clone(), vec![(key.clone(), v.clone())]].concat())).collect();
        }
        out.extend(combos.into_iter().map(|c| (c, start)));
    }
    for p in &sf.sweep.points {
        if let Node::Map(m) = &p.value {
            out.push((m.clone(), Place::from(p.referenced)));
        }
    }
    out
}

/// Builds and validates every variant; all problems of all variants at once, at the sweep file's places.
pub fn expand(sf: &SweepFile, out_dir: &Path) -> Result<Vec<Variant>, SweepError> {
    let base_path = sf.recipe_path();
    let base = edgeforge_recipe::parse_recipe(&base_path).map_err(|e| match e {
        RecipeError::Invalid(d) => SweepError::Invalid(d),
        other => SweepError::Invalid(vec![sf.diagnostic(sf.sweep.recipe.referenced, other.to_string())]),
    })?;
    let mut tree: Node = serde_saphyr::from_str(&base.text).map_err(|e| SweepError::Invalid(vec![sf.diagnostic(sf.sweep.recipe.referenced, e.to_string())]))?;
    absolutize(&mut tree, &base.base_dir());
    let mut variants = Vec::new();
    let mut diags = Vec::new();
    for (index, (settings, place)) in combinations(sf).into_iter().enumerate() {
        let name = variant_name(index, &settings);
        match build_one(&tree, &settings, &out_dir.join("variants").join(&name)) {
            Ok(recipe_text) => variants.push(Variant { name, settings, place, recipe_text }),
            Err(problems) => diags.extend(problems.into_iter().map(|m| sf.diagnostic(place, format!("variant {name}: {m}")))),
        }
    }
    if diags.is_empty() {
        Ok(variants)
    } else {
        Err(SweepError::Invalid(diags))
    }
}

/// The variant's recipe text, parsed and validated as if it were at `dir/recipe.yaml`.
fn build_one(base: &Node, settings: &[(String, Node)], dir: &Path) -> Result<String, Vec<String>> {
    let mut tree = base.clone();
    for (path, value) in settings {
        set(&mut tree, path, value.clone()).map_err(|e| vec![e])?;
    }
    let text = serde_saphyr::to_string(&tree).map_err(|e| vec![format!("cannot write the recipe: {e}")])?;
    let path: PathBuf = dir.join("recipe.yaml");
    let checked = edgeforge_recipe::parse::parse_recipe_text(&path, text.clone()).and_then(|rf| edgeforge_recipe::validate::validate(&rf, false).map(|_| ()));
    match checked {
        Ok(()) => Ok(text),
        Err(RecipeError::Invalid(d)) => Err(d.iter().map(message_of).collect()),
        Err(other) => Err(vec![other.to_string()]),
    }
}

fn message_of(d: &Diagnostic) -> String {
    match &d.hint {
        Some(h) => format!("{} (hint: {h})", d.message),
        None => d.message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_and_set() {
        assert_eq!(parse_path("passes[1].bits").expect("ok"), [Seg::Key("passes".into()), Seg::Index(1), Seg::Key("bits".into())]);
        assert_eq!(parse_path("passes.1.bits").expect("ok"), parse_path("passes[1].bits").expect("ok"));
        assert!(parse_path("passes[x].bits").is_err());
        assert!(parse_path("passes[1.bits").is_err());
        assert!(parse_path(".bits").is_err());
        let mut n: Node = serde_saphyr::from_str("passes:\n  - pass: rtn\n    bits: 4\n").expect("yaml");
        set(&mut n, "passes[0].bits", Node::UInt(8)).expect("set");
        set(&mut n, "passes[0].group_size", Node::UInt(32)).expect("new key");
        set(&mut n, "eval.perplexity.chunks", Node::UInt(2)).expect("new nested map");
        assert!(set(&mut n, "passes[3].bits", Node::UInt(8)).unwrap_err().contains("out of range"));
        assert!(set(&mut n, "passes.bits", Node::UInt(8)).unwrap_err().contains("needs a map"));
        let text = serde_saphyr::to_string(&n).expect("yaml");
        assert!(text.contains("bits: 8") && text.contains("group_size: 32") && text.contains("chunks: 2"), "{text}");
        assert!(text.find("pass: rtn").expect("pass") < text.find("bits").expect("bits"), "{text}");
    }

    #[test]
    fn names_are_stable_and_safe() {
        let s = vec![("passes[0].bits".to_owned(), Node::UInt(4)), ("passes[0].format".to_owned(), Node::Str("q4_0/x".into()))];
        assert_eq!(variant_name(3, &s), "03-bits4-formatq4_0-x");
    }
}
