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
    /// The folder relative paths in the recipe are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
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
        Ok(recipe) => Ok(RecipeFile {
            path: path.to_path_buf(),
            sha256: edgeforge_core::hash::sha256_hex(&[text.as_bytes()]),
            text,
            recipe,
        }),
        Err(e) => {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            let message = first_line_without_location(&e.to_string());
            let hint = hint_for_message(&message).or_else(|| yaml_hint(&message));
            Err(RecipeError::Invalid(vec![Diagnostic { path: path.to_path_buf(), line, column, message, hint }]))
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

fn yaml_hint(message: &str) -> Option<String> {
    if message.contains("tab") {
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
