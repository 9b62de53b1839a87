//! SentencePiece-style vocabularies (`tokenizer.ggml.model = "llama"`: Llama 2, Mistral, Phi-3, Gemma),
//! tokenized as llama.cpp's SPM tokenizer does (src/llama-vocab.cpp, `llm_tokenizer_spm_session`).
//!
//! Written here rather than taken from the `tokenizers` crate: its BPE model ranks merges by list position
//! and its Unigram model is a different algorithm, while llama.cpp merges any adjacent pair whose text is a
//! token, highest token score first, ties to the leftmost pair. Only this exact rule gives llama.cpp's ids.
//!
//! Per text fragment (text between user-defined tokens): a space is put in front when
//! `add_space_prefix` is on and the fragment starts the text or follows a token; every space becomes `▁`;
//! the fragment is split into characters and merged; a character that is no token becomes its UTF-8 bytes'
//! `<0xNN>` tokens.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

use crate::error::TokenizerError;
use crate::token_kinds::Kind;

/// SentencePiece's visible space.
pub(crate) const SPACE: char = '\u{2581}';

pub(crate) const TYPE_BYTE: i32 = 6;
const TYPE_UNUSED: i32 = 5;

/// The `<0xNN>` text of byte `b`.
pub(crate) fn byte_token_text(b: u8) -> String {
    format!("<0x{b:02X}>")
}

#[derive(Debug, Clone)]
pub(crate) struct Spm {
    ids: HashMap<String, u32>,
    texts: Vec<String>,
    scores: Vec<f32>,
    kinds: Vec<Kind>,
    /// `tokenizer.ggml.token_type` (1 when absent), for decoding.
    types: Vec<i32>,
    /// User-defined tokens, cut out of the text before merging: longest text first, as llama.cpp orders them.
    cut_out: Vec<u32>,
    pub(crate) add_space_prefix: bool,
}

/// One pending merge: the pair starting at symbol `left`, whose joined text is a token of score `score`.
#[derive(Debug)]
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    /// Joined length in bytes; a pair whose symbols changed since it was queued no longer matches it.
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Highest score first; equal scores: the leftmost pair first.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then_with(|| Reverse(self.left).cmp(&Reverse(other.left)))
    }
}

#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

impl Spm {
    pub(crate) fn new(
        texts: Vec<String>,
        scores: Vec<f32>,
        kinds: Vec<Kind>,
        types: Vec<i32>,
        add_space_prefix: bool,
    ) -> Self {
        let ids: HashMap<String, u32> = texts.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let mut cut_out: Vec<u32> =
            kinds.iter().enumerate().filter(|(_, k)| **k == Kind::CutOut).map(|(i, _)| i as u32).collect();
        // Stable, so equally long tokens keep id order.
        cut_out.sort_by_key(|&id| Reverse(texts[id as usize].len()));
        Self { ids, texts, scores, kinds, types, cut_out, add_space_prefix }
    }

    pub(crate) fn texts(&self) -> &[String] {
        &self.texts
    }

    pub(crate) fn scores(&self) -> &[f32] {
        &self.scores
    }

    pub(crate) fn kinds(&self) -> &[Kind] {
        &self.kinds
    }

    pub(crate) fn types(&self) -> &[i32] {
        &self.types
    }

    pub(crate) fn id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }

    /// The token of one byte: `<0xNN>`, else the byte itself as a one-character token.
    fn byte_id(&self, b: u8) -> Result<u32, TokenizerError> {
        let single = if b.is_ascii() { Some(char::from(b).to_string()) } else { None };
        self.id(&byte_token_text(b))
            .or_else(|| single.and_then(|s| self.id(&s)))
            .ok_or(TokenizerError::MissingByteToken { byte: b })
    }

    /// The text's ids, without BOS/EOS.
    pub(crate) fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let mut out = Vec::new();
        let mut prev_was_token = true;
        for piece in self.partition(text) {
            match piece {
                Piece::Token(id) => {
                    out.push(id);
                    prev_was_token = true;
                }
                Piece::Text(t) => {
                    let prefix = if self.add_space_prefix && prev_was_token { " " } else { "" };
                    let escaped = format!("{prefix}{t}").replace(' ', "\u{2581}");
                    self.merge(&escaped, &mut out)?;
                    prev_was_token = false;
                }
            }
        }
        Ok(out)
    }

    /// Split `text` at user-defined tokens: each one in turn, longest first, is cut out of every text piece
    /// left by the ones before (llama.cpp's `tokenizer_st_partition` with `parse_special = false`).
    fn partition<'a>(&self, text: &'a str) -> Vec<Piece<'a>> {
        let mut pieces = if text.is_empty() { Vec::new() } else { vec![Piece::Text(text)] };
        for &id in &self.cut_out {
            let needle = self.texts[id as usize].as_str();
            let mut next = Vec::with_capacity(pieces.len());
            for piece in pieces {
                let Piece::Text(mut rest) = piece else {
                    next.push(piece);
                    continue;
                };
                while let Some(at) = rest.find(needle) {
                    if at > 0 {
                        next.push(Piece::Text(&rest[..at]));
                    }
                    next.push(Piece::Token(id));
                    rest = &rest[at + needle.len()..];
                }
                if !rest.is_empty() {
                    next.push(Piece::Text(rest));
                }
            }
            pieces = next;
        }
        pieces
    }

    /// One escaped fragment → ids, appended to `out`.
    fn merge(&self, text: &str, out: &mut Vec<u32>) -> Result<(), TokenizerError> {
        let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
        for (i, (start, c)) in text.char_indices().enumerate() {
            let len = c.len_utf8();
            let next = (start + len < text.len()).then_some(i + 1);
            symbols.push(Symbol { start, len, prev: i.checked_sub(1), next });
        }
        let mut queue = BinaryHeap::new();
        for i in 1..symbols.len() {
            self.push_bigram(text, &symbols, i - 1, i, &mut queue);
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (symbols[b.left], symbols[b.right]);
            // A pair one of whose symbols has since been merged away or grown is stale.
            if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
                continue;
            }
            symbols[b.left].len += r.len;
            symbols[b.right].len = 0;
            symbols[b.left].next = r.next;
            if let Some(n) = r.next {
                symbols[n].prev = Some(b.left);
            }
            if let Some(p) = l.prev {
                self.push_bigram(text, &symbols, p, b.left, &mut queue);
            }
            if let Some(n) = r.next {
                self.push_bigram(text, &symbols, b.left, n, &mut queue);
            }
        }
        let mut at = if symbols.is_empty() { None } else { Some(0) };
        while let Some(i) = at {
            let s = symbols[i];
            let piece = &text[s.start..s.start + s.len];
            match self.id(piece) {
                Some(id) => out.push(id),
                // Only a single character that is no token is left unmerged like this.
                None => {
                    for &b in piece.as_bytes() {
                        out.push(self.byte_id(b)?);
                    }
                }
            }
            at = s.next;
        }
        Ok(())
    }

    fn push_bigram(&self, text: &str, symbols: &[Symbol], left: usize, right: usize, queue: &mut BinaryHeap<Bigram>) {
        let (l, r) = (symbols[left], symbols[right]);
        let size = l.len + r.len;
        if let Some(id) = self.id(&text[l.start..l.start + size]) {
            queue.push(Bigram { score: self.scores[id as usize], left, right, size });
        }
    }

    /// Ids → text as llama.cpp's `token_to_piece(special = true)` gives it, pieces joined: `▁` back to a
    /// space, byte tokens to their byte, control and user-defined tokens as their text, unused tokens as
    /// nothing. With `add_space_prefix`, the one space the encoder put in front is dropped again.
    pub(crate) fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let mut bytes = Vec::new();
        for &id in ids {
            let i = id as usize;
            let Some(text) = self.texts.get(i) else {
                return Err(TokenizerError::UnknownId { id, vocab_size: self.texts.len() });
            };
            match (self.types[i], self.kinds[i]) {
                (_, Kind::Special | Kind::CutOut) => bytes.extend_from_slice(text.as_bytes()),
                (TYPE_BYTE, _) => bytes.push(parse_byte_token(text).unwrap_or(0)),
                (TYPE_UNUSED, _) => {}
                _ => bytes.extend_from_slice(text.replace(SPACE, " ").as_bytes()),
            }
        }
        let mut s = String::from_utf8_lossy(&bytes).into_owned();
        if self.add_space_prefix && s.starts_with(' ') {
            s.remove(0);
        }
        Ok(s)
    }
}

/// `<0xNN>` → the byte.
pub(crate) fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

#[derive(Debug, Clone, Copy)]
enum Piece<'a> {
    Text(&'a str),
    Token(u32),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spm(tokens: &[(&str, f32)], add_space_prefix: bool) -> Spm {
        let mut texts: Vec<String> = (0..=255u8).map(byte_token_text).collect();
        let mut scores = vec![0.0; 256];
        let mut types = vec![TYPE_BYTE; 256];
        for (t, s) in tokens {
            texts.push((*t).to_owned());
            scores.push(*s);
            types.push(1);
        }
        let kinds = vec![Kind::Normal; texts.len()];
        Spm::new(texts, scores, kinds, types, add_space_prefix)
    }

    fn pieces(s: &Spm, text: &str) -> Vec<String> {
        s.encode(text).unwrap().iter().map(|&i| s.texts()[i as usize].clone()).collect()
    }

    #[test]
    fn highest_score_merges_first_and_ties_go_left() {
        let s = spm(&[("a", 0.0), ("b", 0.0), ("c", 0.0), ("ab", -2.0), ("bc", -1.0)], false);
        assert_eq!(pieces(&s, "abc"), ["a", "bc"]);
        let s = spm(&[("a", 0.0), ("b", 0.0), ("c", 0.0), ("ab", -1.0), ("bc", -1.0)], false);
        assert_eq!(pieces(&s, "abc"), ["ab", "c"]);
    }

    #[test]
    fn space_prefix_escape_and_byte_fallback() {
        let s = spm(&[("▁", -5.0), ("a", 0.0), ("▁a", -1.0)], true);
        assert_eq!(pieces(&s, "a a"), ["▁a", "▁a"]);
        // `é` is no token: its two UTF-8 bytes.
        assert_eq!(pieces(&s, "é"), ["▁", "<0xC3>", "<0xA9>"]);
        assert_eq!(s.decode(&s.encode("a é").unwrap()).unwrap(), "a é");
        let s = spm(&[("▁", -5.0), ("a", 0.0), ("▁a", -1.0)], false);
        assert_eq!(pieces(&s, "a"), ["a"]);
        assert!(s.encode("").unwrap().is_empty());
    }

    #[test]
    fn byte_tokens_parse() {
        assert_eq!(parse_byte_token("<0x0A>"), Some(10));
        assert_eq!(parse_byte_token("<0xFF>"), Some(255));
        assert_eq!(parse_byte_token("<0x1>"), None);
        assert_eq!(byte_token_text(10), "<0x0A>");
    }
}
