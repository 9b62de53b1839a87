//! Reading a recipe file: YAML through serde-saphyr (duplicate keys refused, alias expansion bounded),
//! every error turned into a `file:line:column` diagnostic.

use std::path::{Path, PathBuf};

use serde_saphyr::{DuplicateKeyPolicy, Options};

use crate::diagnostic::{hint_for_message, Diagnostic, Place};
use crate::schema::Recipe;
use crate::RecipeError;

/// A parsed recipe and where it came from.
#[derive(Debug, Clone)]
pub struct RecipeFile {
    pub path: PathBuf,
    pub text: String,
    pub sha256: String,
    pub recipe: Recipe,
}

impl RecipeFile {
    /// The folder relative paths in the recipe are resolved against: the recipe's own, made absolute (so
    /// messages show the full path that was tried).
    pub fn base_dir(&self) -> PathBuf {
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::path::absolute(&dir).unwrap_or(dir)
    }

    pub fn diagnostic(&self, at: impl Into<Place>, message: impl Into<String>, hint: Option<String>) -> Diagnostic {
        let at = at.into();
        Diagnostic { path: self.path.clone(), line: at.line, column: at.column, message: message.into(), hint }
    }
}

pub fn parse_recipe(path: &Path) -> Result<RecipeFile, RecipeError> {
    let text = edgeforge_core::read_limit::read_text_at_most(path, edgeforge_core::read_limit::MAX_DOCUMENT_BYTES, "recipe")
        .map_err(|source| match source.kind() {
            // Too large or not UTF-8: the recipe's fault, reported like any other recipe error.
            std::io::ErrorKind::InvalidData => RecipeError::Invalid(vec![Diagnostic {
                path: path.to_path_buf(),
                line: 1,
                column: 1,
                message: source.to_string(),
                hint: None,
            }]),
            _ => RecipeError::Io { path: path.to_path_buf(), source },
        })?;
    parse_recipe_text(path, text)
}

pub fn parse_recipe_text(path: &Path, text: String) -> Result<RecipeFile, RecipeError> {
    let mut options = Options::default();
    options.duplicate_keys = DuplicateKeyPolicy::Error;
    match serde_saphyr::from_str_with_options::<Recipe>(&text, options) {
        Ok(recipe) => {
            let mut rf = RecipeFile { path: path.to_path_buf(), sha256: edgeforge_core::hash::sha256_hex(&[text.as_bytes()]), text, recipe };
            resolve_pass_paths(&mut rf);
            Ok(rf)
        }
        Err(e) => {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            let message = first_line_without_location(&e.to_string());
            let (message, layout_hint) = explain_layout(&text, line, column, message);
            let hint = layout_hint.or_else(|| hint_for_message(&message)).or_else(|| yaml_hint(&message));
            Err(RecipeError::Invalid(vec![Diagnostic { path: path.to_path_buf(), line, column, message, hint }]))
        }
    }
}

/// Pass options that name files follow the one path rule (`validate::resolve_path`): a corpus given as a path
/// relative to the recipe's folder becomes that file; a dataset name stays a name.
fn resolve_pass_paths(rf: &mut RecipeFile) {
    let base = rf.base_dir();
    for p in &mut rf.recipe.passes {
        if let crate::registry::PassSpec::PruneVocab(o) = &mut p.value {
            let file = base.join(&o.corpus);
            if file.is_file() {
                o.corpus = file.display().to_string();
            }
        }
    }
}

/// serde-saphyr's Display is "error: line L column C: MESSAGE" followed by a source snippet; we keep MESSAGE
/// and report the place in our own `file:line:col` form.
pub fn first_line_without_location(display: &str) -> String {
    let first = display.lines().next().unwrap_or(display).trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let rest = match first.strip_prefix("line ") {
        Some(r) => r.split_once(": ").map_or(first, |(_, m)| m),
        None => first,
    };
    let msg = rest.trim();
    if msg.is_empty() {
        "invalid recipe".to_owned()
    } else {
        msg.to_owned()
    }
}

/// Indentation of a line (spaces before its first other character).
fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// Parser messages that come from the file's layout, rewritten in the recipe's terms with a hint that names
/// the line to fix: a repeated key (serde-saphyr names its own option), a field reported missing because it
/// is indented less than its siblings, a value that swallowed the next line because that line is indented
/// more than its siblings.
fn explain_layout(text: &str, line: u64, column: u64, message: String) -> (String, Option<String>) {
    let lines: Vec<&str> = text.lines().collect();
    let at = (line as usize).saturating_sub(1);
    if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(',').next().unwrap_or(rest).trim().to_owned();
        let first = lines[..at.min(lines.len())].iter().position(|l| {
            let t = l.trim_start_matches(' ').trim_start_matches("- ");
            t.strip_prefix(key.as_str()).is_some_and(|r| r.trim_start().starts_with(':')) && indent_of(l) + 1 == column as usize
        });
        let hint = first.map_or_else(
            || "each key may appear once per mapping; remove or merge the repeated one".to_owned(),
            |i| format!("`{key}` is already set at line {}; each key may appear once per mapping: remove or merge one", i + 1),
        );
        return (format!("duplicate key `{key}`"), Some(hint));
    }
    if let Some(field) = message.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
        let found = lines.iter().enumerate().skip(at).find(|(_, l)| {
            let t = l.trim_start_matches(' ').trim_start_matches("- ");
            t.strip_prefix(field).is_some_and(|r| r.trim_start().starts_with(':'))
        });
        if let Some((i, l)) = found.filter(|(_, l)| indent_of(l) + 1 != column as usize) {
            let hint = format!("`{field}` is at line {} column {}, indented differently from the other keys of this mapping (column {column}); indent it to column {column}", i + 1, indent_of(l) + 1);
            return (message, Some(hint));
        }
    }
    // `pass: quantize-rtn` followed by a line indented further: YAML reads "quantize-rtn bits" as one value.
    if let (Some(this), Some(next)) = (lines.get(at), lines.get(at + 1)) {
        let key_col = indent_of(this) + if this.trim_start().starts_with("- ") { 2 } else { 0 };
        let next_col = indent_of(next);
        let continued = next.trim_start().split(':').next().is_some_and(|w| !w.is_empty() && message.contains(&format!(" {}", w.trim())));
        if continued && next_col > key_col {
            let hint = format!("line {} is indented more than the keys above it ({} spaces, they have {key_col}), so YAML read it as the rest of line {line}'s value; indent it like them", at + 2, next_col);
            return (message, Some(hint));
        }
    }
    (message, None)
}

fn yaml_hint(message: &str) -> Option<String> {
    if message.contains("found a tab") || message.contains("tab character") {
        Some("YAML indents with spaces only; replace the tab characters".into())
    } else if message.contains("duplicate") {
        Some("each key may appear once per mapping; remove or merge the repeated one".into())
    } else if message.starts_with("invalid u") || message.starts_with("invalid i") {
        Some("expected a whole number here; see `edgeforge schema` for the allowed values".into())
    } else if message.contains("missing field") {
        Some("see `edgeforge schema` or recipes/full-reference.yaml for every field".into())
    } else {
        None
    }
}
