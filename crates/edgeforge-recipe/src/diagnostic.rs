//! Recipe problems, each at a file, line and column, with a hint where we can guess the fix.

use std::path::PathBuf;

/// A line and column (1-based) in a recipe file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub line: u64,
    pub column: u64,
}

impl Place {
    pub const START: Place = Place { line: 1, column: 1 };
}

impl From<serde_saphyr::Location> for Place {
    fn from(l: serde_saphyr::Location) -> Self {
        Place { line: l.line(), column: l.column() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub path: PathBuf,
    pub line: u64,
    pub column: u64,
    pub message: String,
    pub hint: Option<String>,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: {}", self.path.display(), self.line, self.column, self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

/// "did you mean" for a word among candidates (edit distance at most a third of its length, at least 2).
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let limit = (word.len() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

/// A hint for serde's "unknown field `x`, expected one of `a`, `b`" and "unknown variant" messages.
pub fn hint_for_message(message: &str) -> Option<String> {
    let (word, rest) = ["unknown field `", "unknown variant `", "unknown pass `"].iter().find_map(|p| {
        let start = message.find(p)? + p.len();
        let end = start + message[start..].find('`')?;
        Some((&message[start..end], &message[end..]))
    })?;
    let list = rest.split("expected one of").nth(1).or_else(|| rest.split("expected").nth(1))?;
    let candidates: Vec<&str> = list.split(',').map(|c| c.trim().trim_matches('`').trim()).filter(|c| !c.is_empty()).collect();
    suggest(word, candidates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_for_typos() {
        assert_eq!(
            hint_for_message("unknown field `group_szie`, expected one of `bits`, `group_size`, `symmetric`").as_deref(),
            Some("did you mean `group_size`?")
        );
        assert_eq!(hint_for_message("unknown pass `quantise-rtn`, expected one of quantize-rtn").as_deref(), Some("did you mean `quantize-rtn`?"));
        assert_eq!(hint_for_message("unknown field `zzz`, expected one of `bits`"), None);
    }
}
