//! Which tokens llama.cpp cuts out of input text before BPE, and which it leaves as plain text.
//!
//! With `parse_special = false`, llama.cpp cuts out user-defined tokens (type 4) wherever their text occurs
//! and leaves control (3) and unknown (2) token text alone. Its loader also re-types some tokens by their
//! text, whatever the file says; those rules are repeated here because they change the ids.

use tokenizers::{AddedToken, Tokenizer as HfTokenizer};

const TYPE_UNKNOWN: i32 = 2;
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;

/// Texts llama.cpp takes for end-of-generation or fill-in-the-middle markers and so makes control tokens
/// (llama-vocab.cpp, "auto-detect special tokens by text").
const CONTROL_LOOKING: &[&str] = &[
    "</s>", "<EOT>", "<MID>", "<PAD>", "<PRE>", "<REPO>", "<SUF>", "<end_of_turn>", "<end_of_utterance>", "<eos>",
    "<fim-middle>", "<fim-pad>", "<fim-prefix>", "<fim-repo>", "<fim-suffix>", "<fim_middle>", "<fim_pad>",
    "<fim_prefix>", "<fim_suffix>", "<reponame>", "<turn|>", "<|calls|>", "<|call|>", "<|code_middle|>",
    "<|code_prefix|>", "<|code_suffix|>", "<|end_of_text|>", "<|endoftext|>", "<|end|>", "<|eom_id|>",
    "<|eot_id|>", "<|file_sep|>", "<|fim_middle|>", "<|fim_pad|>", "<|fim_prefix|>", "<|fim_repo|>",
    "<|fim_suffix|>", "<|flush|>", "<|im_end|>", "<|middle|>", "<|prefix|>", "<|repo_name|>", "<|return|>",
    "<|suffix|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "<｜fim▁begin｜>", "<｜fim▁end｜>",
    "<｜fim▁hole｜>", "[EOS]", "[EOT]", "[PAD]", "[e~[", "_<EOT>", "▁<MID>", "▁<PRE>", "▁<SUF>",
];

/// gpt-oss chat markers, which llama.cpp always makes user-defined (so they are cut out of plain text).
const ALWAYS_USER_DEFINED: &[&str] = &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Ordinary BPE vocabulary entry.
    Normal,
    /// Known to decode, never cut out of input text (control, unknown).
    Special,
    /// Cut out of input text wherever its text occurs (user-defined).
    CutOut,
}

/// The kind of every token, from the file's types and llama.cpp's re-typing rules.
pub(crate) fn kinds(texts: &[String], types: Option<&[i32]>) -> Vec<Kind> {
    let has = |t: &str| texts.iter().any(|x| x == t);
    // o200k-harmony / solar-open: `<|end|>` ends a message, not generation, and llama.cpp makes it
    // user-defined when the vocabulary has the markers that do end generation.
    let end_is_user =
        has("<|end|>") && (has("<|call|>") || has("<|calls|>")) && (has("<|return|>") || has("<|flush|>"));
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            if ALWAYS_USER_DEFINED.contains(&text.as_str()) || (end_is_user && text == "<|end|>") {
                return Kind::CutOut;
            }
            match types.and_then(|t| t.get(i)).copied() {
                Some(TYPE_CONTROL | TYPE_UNKNOWN) => Kind::Special,
                Some(TYPE_USER_DEFINED) if CONTROL_LOOKING.contains(&text.as_str()) => Kind::Special,
                Some(TYPE_USER_DEFINED) => Kind::CutOut,
                _ => Kind::Normal,
            }
        })
        .collect()
}

/// Special tokens become special added tokens, so decode and exported tokenizer.json files know them, and
/// `encode_special_tokens` keeps them from being cut out of input text. Cut-out tokens become ordinary
/// added tokens matched on the raw, unnormalized input.
pub(crate) fn register(inner: &mut HfTokenizer, texts: &[String], kinds: &[Kind]) {
    let mut special = Vec::new();
    let mut cut_out = Vec::new();
    for (text, kind) in texts.iter().zip(kinds) {
        match kind {
            Kind::Special => special.push(AddedToken::from(text.clone(), true)),
            Kind::CutOut => cut_out.push(AddedToken::from(text.clone(), false).normalized(false)),
            Kind::Normal => {}
        }
    }
    inner.add_special_tokens(&special);
    inner.add_tokens(&cut_out);
    inner.set_encode_special_tokens(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn file_types_and_llama_cpp_retyping() {
        let t = texts(&["a", "<|im_start|>", "<unk>", "<tool>", "<|im_end|>", "<|start|>"]);
        let k = kinds(&t, Some(&[1, 3, 2, 4, 4, 3]));
        use Kind::*;
        // A user-defined `<|im_end|>` is control to llama.cpp; a control `<|start|>` is user-defined.
        assert_eq!(k, [Normal, Special, Special, CutOut, Special, CutOut]);
        assert_eq!(kinds(&t[..2], None), [Normal, Normal]);
    }

    #[test]
    fn harmony_end_marker_is_user_defined_only_beside_call_and_return() {
        let t = texts(&["<|end|>", "<|call|>", "<|return|>"]);
        assert_eq!(kinds(&t, Some(&[3, 3, 3]))[0], Kind::CutOut);
        assert_eq!(kinds(&t[..2], Some(&[3, 3]))[0], Kind::Special);
    }
}
