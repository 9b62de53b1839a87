//! Vocabulary pruning for byte-level BPE: keep the tokens a text uses, plus what every other text still
//! needs to tokenize. Kept: the used tokens, control/user-defined/unknown/byte tokens and the BOS/EOS/UNK/PAD
//! ids, the vocabulary's single-byte symbols (so any string can be spelled), and, transitively, both sides of
//! every merge that produces a kept token. Merges survive when their two sides and result are all kept.
//!
//! On the text the kept set was taken from, every merge the original tokenizer applied is still there (its
//! result is a kept token or a side of a kept merge), and no removed merge can fire on it (its result would
//! have been kept), so the pruned tokenizer gives the same tokens under the new ids. Other text falls back
//! to shorter pieces, down to bytes, and still round-trips.

use std::collections::HashMap;

use crate::error::TokenizerError;
use crate::missing_bytes::byte_symbols;
use crate::vocab::split_merge;
use crate::{GgufVocab, Tokenizer};

/// The pruned tokenizer and, for each of its ids, the id the token had before.
pub struct PrunedVocab {
    pub tokenizer: Tokenizer,
    /// Old ids of the kept tokens, ascending: new id `i` is old id `kept[i]`.
    pub kept: Vec<u32>,
}

fn prune_error(reason: impl Into<String>) -> TokenizerError {
    TokenizerError::Prune { reason: reason.into() }
}

/// Tokens kept regardless of the text: special types, special ids and single-byte symbols.
fn always_kept(v: &GgufVocab, keep: &mut [bool]) {
    let bytes: std::collections::HashSet<char> = byte_symbols().into_iter().collect();
    for (i, t) in v.tokens.iter().enumerate() {
        let mut chars = t.chars();
        let single_byte = matches!((chars.next(), chars.next()), (Some(c), None) if bytes.contains(&c));
        // 2 unknown, 3 control, 4 user-defined, 6 byte.
        let special = v.token_types.as_ref().and_then(|ty| ty.get(i)).is_some_and(|ty| matches!(ty, 2 | 3 | 4 | 6));
        keep[i] |= single_byte || special;
    }
    for id in [v.bos_id, v.eos_id, v.unk_id, v.pad_id].into_iter().flatten() {
        if let Some(k) = keep.get_mut(id as usize) {
            *k = true;
        }
    }
}

/// Merges as (left id, right id, result id), in rank order; merges naming an unknown token are left out
/// (the tokenizer was built, so there are none).
fn merge_ids(v: &GgufVocab) -> Vec<(usize, usize, usize)> {
    let index: HashMap<&str, usize> = v.tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    v.merges
        .iter()
        .filter_map(|m| {
            let (l, r) = split_merge(m)?;
            Some((*index.get(l)?, *index.get(r)?, *index.get(format!("{l}{r}").as_str())?))
        })
        .collect()
}

/// Keep both sides of every merge that produces a kept token, until nothing changes.
fn close_over_merges(merges: &[(usize, usize, usize)], keep: &mut [bool]) {
    let mut producing: HashMap<usize, Vec<(usize, usize)>> = HashMap::new();
    for &(l, r, t) in merges {
        producing.entry(t).or_default().push((l, r));
    }
    let mut work: Vec<usize> = (0..keep.len()).filter(|&i| keep[i]).collect();
    while let Some(t) = work.pop() {
        for &(l, r) in producing.get(&t).map(Vec::as_slice).unwrap_or_default() {
            for side in [l, r] {
                if !keep[side] {
                    keep[side] = true;
                    work.push(side);
                }
            }
        }
    }
}

fn pick<T: Copy>(xs: &[T], kept: &[u32]) -> Vec<T> {
    kept.iter().filter_map(|&o| xs.get(o as usize).copied()).collect()
}

/// The description of the pruned vocabulary: kept tokens in old-id order, surviving merges in rank order.
fn pruned_description(v: &GgufVocab, merges: &[(usize, usize, usize)], keep: &[bool], kept: &[u32]) -> GgufVocab {
    let mut new_id = vec![u32::MAX; keep.len()];
    for (n, &o) in kept.iter().enumerate() {
        new_id[o as usize] = n as u32;
    }
    let remap = |id: Option<u32>| id.and_then(|i| new_id.get(i as usize).copied()).filter(|&i| i != u32::MAX);
    let merge_text = merges.iter().filter(|&&(l, r, t)| keep[l] && keep[r] && keep[t]).map(|&(l, r, _)| format!("{} {}", v.tokens[l], v.tokens[r]));
    GgufVocab {
        tokens: kept.iter().map(|&o| v.tokens[o as usize].clone()).collect(),
        token_types: v.token_types.as_ref().map(|xs| pick(xs, kept)),
        scores: v.scores.as_ref().map(|xs| pick(xs, kept)),
        merges: merge_text.collect(),
        bos_id: remap(v.bos_id),
        eos_id: remap(v.eos_id),
        unk_id: remap(v.unk_id),
        pad_id: remap(v.pad_id),
        ..v.clone()
    }
}

impl Tokenizer {
    /// Keep the tokens `used` marks (indexed by id) and everything any text needs to still tokenize (see the
    /// module text). Byte-level BPE vocabularies from GGUF metadata only.
    pub fn prune(&self, used: &[bool]) -> Result<PrunedVocab, TokenizerError> {
        let v = self.gguf_vocab().ok_or_else(|| prune_error("needs the tokenizer's GGUF description (load the model from GGUF)"))?;
        if v.model != "gpt2" {
            return Err(prune_error(format!("supports byte-level BPE vocabularies (tokenizer.ggml.model gpt2), not `{}`", v.model)));
        }
        if used.len() != v.tokens.len() {
            return Err(prune_error(format!("{} usage flags for {} tokens", used.len(), v.tokens.len())));
        }
        let mut keep = used.to_vec();
        always_kept(v, &mut keep);
        let merges = merge_ids(v);
        close_over_merges(&merges, &mut keep);
        let kept: Vec<u32> = (0..keep.len()).filter(|&i| keep[i]).map(|i| i as u32).collect();
        let tokenizer = Tokenizer::from_gguf_vocab(&pruned_description(v, &merges, &keep, &kept))?;
        Ok(PrunedVocab { tokenizer, kept })
    }
}
