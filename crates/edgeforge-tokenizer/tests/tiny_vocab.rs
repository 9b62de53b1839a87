//! Tokenizer rules on a tiny byte-level vocabulary built here: merge order, digit splitting, control tokens
//! left unparsed, BOS handling, the tokenizer.json round trip, and the errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgeforge_tokenizer::{GgufVocab, Tokenizer, TokenizerError};

/// GPT-2's byte → printable character map.
fn byte_symbols() -> Vec<String> {
    let printable: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut next = 256;
    (0..256u32)
        .map(|b| {
            let c = if printable.contains(&b) {
                b
            } else {
                next += 1;
                next - 1
            };
            char::from_u32(c).unwrap().to_string()
        })
        .collect()
}

const MERGES: [&str; 6] = ["Ġ t", "h e", "Ġt he", "1 2", "Ġ c", "a t"];

fn vocab() -> GgufVocab {
    let mut tokens = vec!["<|endoftext|>".to_owned(), "<|im_start|>".to_owned()];
    let mut types = vec![3, 3];
    for s in byte_symbols() {
        tokens.push(s);
        types.push(1);
    }
    for m in MERGES {
        tokens.push(m.replace(' ', ""));
        types.push(1);
    }
    GgufVocab {
        model: "gpt2".into(),
        pre: Some("smollm".into()),
        tokens,
        token_types: Some(types),
        merges: MERGES.iter().map(|s| (*s).to_owned()).collect(),
        bos_id: Some(0),
        eos_id: Some(0),
        add_bos: Some(false),
        ..GgufVocab::default()
    }
}

fn id(t: &Tokenizer, text: &str) -> u32 {
    let ids = t.encode(text, false).unwrap();
    assert_eq!(ids.len(), 1, "{text:?} -> {ids:?}");
    ids[0]
}

#[test]
fn merges_apply_by_rank_and_digits_split() {
    let t = Tokenizer::from_gguf_vocab(&vocab()).unwrap();
    let the = id(&t, " the");
    assert_eq!(t.token_text(the).as_deref(), Some("Ġthe"));
    // "12" is a merge, but smollm's pre-tokenizer isolates every digit first, so it never applies.
    let ids = t.encode("12", false).unwrap();
    assert_eq!(ids.len(), 2);
    assert_eq!(t.decode(&t.encode(" the cat sat, 12!\n\n  x", false).unwrap()).unwrap(), " the cat sat, 12!\n\n  x");
    // " cat" = "Ġc" + "at": "Ġ c" (rank 4) and "a t" (rank 5) both apply.
    assert_eq!(t.encode(" cat", false).unwrap().len(), 2);
}

#[test]
fn control_token_text_is_not_parsed_as_a_special_token() {
    let t = Tokenizer::from_gguf_vocab(&vocab()).unwrap();
    let ids = t.encode("<|im_start|>", false).unwrap();
    assert!(ids.len() > 1, "{ids:?}");
    assert!(!ids.contains(&1));
    assert_eq!(t.decode(&[1]).unwrap(), "<|im_start|>");
}

#[test]
fn bos_only_when_add_bos_and_add_special() {
    let t = Tokenizer::from_gguf_vocab(&vocab()).unwrap();
    assert_eq!(t.encode("the", true).unwrap(), t.encode("the", false).unwrap());
    let t = Tokenizer::from_gguf_vocab(&GgufVocab { add_bos: Some(true), ..vocab() }).unwrap();
    assert_eq!(t.encode("the", true).unwrap()[0], 0);
    assert_ne!(t.encode("the", false).unwrap()[0], 0);
}

#[test]
fn hf_files_round_trip() {
    let t = Tokenizer::from_gguf_vocab(&GgufVocab { add_bos: Some(true), bos_id: Some(1), ..vocab() }).unwrap();
    let dir = tempfile::tempdir().unwrap();
    t.write_hf_files(dir.path()).unwrap();
    let back = Tokenizer::from_hf_dir(dir.path()).unwrap();
    let text = " the cat <|im_start|> 1234 héllo\n";
    assert_eq!(back.encode(text, true).unwrap(), t.encode(text, true).unwrap());
    assert_eq!((back.bos_id(), back.add_bos(), back.vocab_size()), (Some(1), true, t.vocab_size()));
}

#[test]
fn errors_name_the_problem() {
    let e = Tokenizer::from_gguf_vocab(&GgufVocab { pre: Some("klingon".into()), ..vocab() }).unwrap_err();
    assert!(matches!(e, TokenizerError::UnknownPreTokenizer { .. }) && e.to_string().contains("smollm"), "{e}");
    let e = Tokenizer::from_gguf_vocab(&GgufVocab { model: "llama".into(), ..vocab() }).unwrap_err();
    assert!(matches!(e, TokenizerError::UnsupportedModel { .. }), "{e}");
    let mut v = vocab();
    v.merges.push("zz qq".into());
    assert!(matches!(Tokenizer::from_gguf_vocab(&v), Err(TokenizerError::BadMerge { index: 6, .. })));
    let e = Tokenizer::from_gguf_vocab(&GgufVocab { bos_id: Some(100_000), ..vocab() }).unwrap_err();
    assert!(matches!(e, TokenizerError::BadSpecialId { role: "bos", .. }), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let e = Tokenizer::from_hf_dir(dir.path()).unwrap_err();
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
}
