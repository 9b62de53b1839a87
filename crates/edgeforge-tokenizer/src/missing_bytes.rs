//! Vocabularies that lack some of the 256 byte-level symbols (SmolLM2 lacks 21: a few ASCII control
//! characters and bytes that never occur in valid UTF-8 or only in unassigned planes).
//!
//! llama.cpp keeps such a byte as a symbol of its own while merging, so it blocks merges across it, and drops
//! it at the end. The `tokenizers` BPE model instead drops it before merging, which lets its neighbours
//! merge (`>` + `\x1d` + `'` would become `>'` instead of `>` `'`). Cutting each missing symbol out as a
//! pre-token of its own, after the byte-level mapping, restores llama.cpp's blocking.

use std::fmt::Write;

/// GPT-2's byte → symbol map: printable Latin-1 bytes stand for themselves, the rest are moved to U+0100 on.
pub(crate) fn byte_symbols() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut next = 256u32;
    for (b, slot) in out.iter_mut().enumerate() {
        let b = b as u32;
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        let cp = if printable {
            b
        } else {
            next += 1;
            next - 1
        };
        // All values here are below U+0144, far from the surrogates.
        *slot = char::from_u32(cp).unwrap_or('\u{FFFD}');
    }
    out
}

/// A regex character class matching every byte-level symbol for which `has_symbol` is false, or `None`
/// when the vocabulary has them all.
pub(crate) fn isolating_class(has_symbol: impl Fn(char) -> bool) -> Option<String> {
    let missing: Vec<char> = byte_symbols().into_iter().filter(|&c| !has_symbol(c)).collect();
    if missing.is_empty() {
        return None;
    }
    let mut class = String::from("[");
    for c in missing {
        // Writing to a String cannot fail.
        let _ = write!(class, "\\x{{{:X}}}", c as u32);
    }
    class.push(']');
    Some(class)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn gpt2_byte_map() {
        let s = byte_symbols();
        assert_eq!((s[b' ' as usize], s[b'\n' as usize], s[b'a' as usize], s[0xAD]), ('Ġ', 'Ċ', 'a', 'Ń'));
        let mut sorted = s.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 256);
    }

    #[test]
    fn class_lists_the_missing_symbols() {
        let s = byte_symbols();
        assert_eq!(isolating_class(|_| true), None);
        // Byte 0x1D (symbol U+011D) and byte 0xF1 (itself) missing.
        let class = isolating_class(|c| c != s[0x1D] && c != s[0xF1]).unwrap();
        assert_eq!(class, "[\\x{11D}\\x{F1}]");
    }
}
