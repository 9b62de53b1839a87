//! Generated ids → text deltas: each step decodes the whole generation (so multi-token characters and
//! SentencePiece spaces come out right), holds back an incomplete UTF-8 character and any tail that could
//! still become a stop sequence, and cuts the text at the first stop sequence.

use edgeforge_tokenizer::{Tokenizer, TokenizerError};

pub struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    stop: &'a [String],
    ids: Vec<u32>,
    /// Bytes of the decoded text already handed out.
    emitted: usize,
}

/// What one more token gives.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Text that is final (may be empty).
    Text(String),
    /// A stop sequence appeared: the text before it; generation ends.
    Stop(String),
}

impl<'a> TextStream<'a> {
    pub fn new(tokenizer: &'a Tokenizer, stop: &'a [String]) -> Self {
        Self { tokenizer, stop, ids: Vec::new(), emitted: 0 }
    }

    pub fn push(&mut self, id: u32) -> Result<Step, TokenizerError> {
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids)?;
        let from = self.emitted.min(text.len());
        // A stop sequence may straddle what was emitted and what is new: search from the earliest start.
        let search_from = self.stop.iter().map(|s| s.len()).max().map_or(from, |m| from.saturating_sub(m));
        let search_from = floor_char_boundary(&text, search_from);
        if let Some(at) = self.stop.iter().filter(|s| !s.is_empty()).filter_map(|s| text[search_from..].find(s.as_str()).map(|i| search_from + i)).min() {
            let out = text.get(from..at.max(from)).unwrap_or("").to_owned();
            self.emitted = text.len();
            return Ok(Step::Stop(out));
        }
        let mut end = text.len();
        if text.ends_with('\u{FFFD}') {
            end -= '\u{FFFD}'.len_utf8();
        }
        end -= self.held_for_stop(&text[..end]);
        let end = end.max(from);
        let out = text[from..end].to_owned();
        self.emitted = end;
        Ok(Step::Text(out))
    }

    /// The length of the longest tail of `text` that is a proper prefix of a stop sequence.
    fn held_for_stop(&self, text: &str) -> usize {
        self.stop.iter().flat_map(|s| (1..s.len()).filter(|&k| s.is_char_boundary(k) && text.ends_with(&s[..k]))).max().unwrap_or(0)
    }

    /// Whatever was held back, at the end of the generation.
    pub fn finish(&mut self) -> Result<String, TokenizerError> {
        let text = self.tokenizer.decode(&self.ids)?;
        let out = text.get(self.emitted.min(text.len())..).unwrap_or("").to_owned();
        self.emitted = text.len();
        Ok(out)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Push the ids of `text` one by one; the concatenated deltas and whether a stop sequence ended it.
    fn run(tok: &Tokenizer, text: &str, stop: &[String]) -> (String, bool) {
        let mut s = TextStream::new(tok, stop);
        let mut out = String::new();
        for id in tok.encode(text, false).unwrap() {
            match s.push(id).unwrap() {
                Step::Text(t) => out.push_str(&t),
                Step::Stop(t) => {
                    out.push_str(&t);
                    return (out, true);
                }
            }
        }
        out.push_str(&s.finish().unwrap());
        (out, false)
    }

    #[test]
    fn deltas_add_up_to_the_text_and_stop_sequences_cut_it() {
        let tok = crate::chat::tests::tiny_tokenizer();
        let text = "the cat sat on the mat, é!";
        assert_eq!(run(&tok, text, &[]), (text.to_owned(), false));
        assert_eq!(run(&tok, text, &["sat".into()]), ("the cat ".to_owned(), true));
        assert_eq!(run(&tok, text, &["xyz".into(), " on".into()]), ("the cat sat".to_owned(), true));
        // A held-back prefix of a stop sequence that never completes still comes out at the end.
        assert_eq!(run(&tok, "the ca", &["cat".into()]), ("the ca".to_owned(), false));
    }

    #[test]
    fn an_incomplete_character_is_held_back() {
        let tok = crate::chat::tests::tiny_tokenizer();
        let ids = tok.encode("é", false).unwrap();
        assert_eq!(ids.len(), 2, "é is two byte tokens in the tiny vocabulary");
        let mut s = TextStream::new(&tok, &[]);
        assert_eq!(s.push(ids[0]).unwrap(), Step::Text(String::new()));
        assert_eq!(s.push(ids[1]).unwrap(), Step::Text("é".into()));
    }
}
