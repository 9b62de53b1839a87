//! SentencePiece-style (`tokenizer.ggml.model = "llama"`) rules on tiny vocabularies built here: llama.cpp's
//! defaults, the space prefix after user-defined tokens, control-token text left as text, byte fallback,
//! Hugging Face files in Llama 2 and Mistral v0.3 form, and the errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgeforge_tokenizer::{GgufVocab, Tokenizer, TokenizerError, TokenizerKind};
use serde_json::{json, Value};

/// `<unk>`, `<s>`, `</s>`, the 256 byte tokens, then (type, score, text) pieces.
fn spm_vocab(pieces: &[(i32, f32, &str)]) -> GgufVocab {
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>"].map(str::to_owned).to_vec();
    let mut types = vec![2, 3, 3];
    let mut scores = vec![0.0; 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    for (ty, score, text) in pieces {
        tokens.push((*text).to_owned());
        types.push(*ty);
        scores.push(*score);
    }
    GgufVocab {
        model: "llama".into(),
        tokens,
        token_types: Some(types),
        scores: Some(scores),
        ..GgufVocab::default()
    }
}

const PIECES: &[(i32, f32, &str)] = &[
    (1, -1.0, "▁"),
    (1, -2.0, "x"),
    (1, -3.0, "y"),
    (1, -4.0, "▁x"),
    (1, -5.0, "▁y"),
    (1, -6.0, "<"),
    (1, -7.0, "s"),
    (1, -8.0, ">"),
    (4, 0.0, "<tool>"),
];

fn pieces(t: &Tokenizer, text: &str) -> Vec<String> {
    t.encode(text, false).unwrap().iter().map(|&i| t.token_text(i).unwrap()).collect()
}

#[test]
fn llama_cpp_defaults_for_llama_files() {
    let t = Tokenizer::from_gguf_vocab(&spm_vocab(PIECES)).unwrap();
    assert_eq!(t.kind(), TokenizerKind::SentencePiece);
    assert_eq!((t.bos_id(), t.eos_id(), t.add_bos(), t.add_eos()), (Some(1), Some(2), true, false));
    assert_eq!(t.encode("x", true).unwrap(), [1, t.token_id("▁x").unwrap()]);
    assert_eq!(t.encode("", true).unwrap(), [1]);
    // The pre-tokenizer name is not looked at for these files, as in llama.cpp.
    let v = GgufVocab { pre: Some("anything".into()), ..spm_vocab(PIECES) };
    assert!(Tokenizer::from_gguf_vocab(&v).is_ok());
}

#[test]
fn space_prefix_starts_every_fragment_after_a_user_defined_token() {
    let t = Tokenizer::from_gguf_vocab(&spm_vocab(PIECES)).unwrap();
    assert_eq!(pieces(&t, "x<tool>y x"), ["▁x", "<tool>", "▁y", "▁x"]);
    let t = Tokenizer::from_gguf_vocab(&GgufVocab { add_space_prefix: Some(false), ..spm_vocab(PIECES) }).unwrap();
    assert_eq!(pieces(&t, "x<tool>y x"), ["x", "<tool>", "y", "▁x"]);
    assert_eq!(t.decode(&t.encode("x<tool>y x", false).unwrap()).unwrap(), "x<tool>y x");
}

#[test]
fn control_text_stays_text_and_unknown_characters_become_bytes() {
    let t = Tokenizer::from_gguf_vocab(&GgufVocab { add_space_prefix: Some(false), ..spm_vocab(PIECES) }).unwrap();
    assert_eq!(pieces(&t, "<s>"), ["<", "s", ">"]);
    assert_eq!(pieces(&t, "é\n"), ["<0xC3>", "<0xA9>", "<0x0A>"]);
    assert_eq!(t.decode(&t.encode("é\nx", false).unwrap()).unwrap(), "é\nx");
}

#[test]
fn hf_files_in_llama2_and_mistral_form() {
    let t = Tokenizer::from_gguf_vocab(&spm_vocab(PIECES)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    t.write_hf_files(dir.path()).unwrap();
    let path = dir.path().join("tokenizer.json");
    let mut tj: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(tj["model"]["byte_fallback"], true);
    let text = "x y<tool>xx yy <s>";
    let back = Tokenizer::from_hf_dir(dir.path()).unwrap();
    assert_eq!(back.encode(text, true).unwrap(), t.encode(text, true).unwrap());

    // Mistral v0.3: no normalizer, a Metaspace pre-tokenizer that prepends `▁`.
    tj["normalizer"] = Value::Null;
    tj["pre_tokenizer"] = json!({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false});
    std::fs::write(&path, serde_json::to_vec(&tj).unwrap()).unwrap();
    let back = Tokenizer::from_hf_dir(dir.path()).unwrap();
    assert_eq!(back.encode(text, true).unwrap(), t.encode(text, true).unwrap());

    // Gemma: `▁` by a normalizer without the prefix, then a split at spaces (none are left by then).
    let t = Tokenizer::from_gguf_vocab(&GgufVocab { add_space_prefix: Some(false), ..spm_vocab(PIECES) }).unwrap();
    tj["normalizer"] = json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"});
    tj["pre_tokenizer"] = json!({"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false});
    std::fs::write(&path, serde_json::to_vec(&tj).unwrap()).unwrap();
    let back = Tokenizer::from_hf_dir(dir.path()).unwrap();
    assert_eq!(back.encode(text, false).unwrap(), t.encode(text, false).unwrap());
    assert_ne!(back.encode(text, false).unwrap(), Tokenizer::from_gguf_vocab(&spm_vocab(PIECES)).unwrap().encode(text, false).unwrap());

    // Anything llama.cpp would not do is refused, naming the file and the step.
    tj["normalizer"] = json!({"type": "NFKC"});
    std::fs::write(&path, serde_json::to_vec(&tj).unwrap()).unwrap();
    let e = Tokenizer::from_hf_dir(dir.path()).unwrap_err();
    assert!(matches!(&e, TokenizerError::UnsupportedHfTokenizer { what, .. } if what.contains("NFKC")), "{e}");
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
}

#[test]
fn spm_errors_name_the_problem() {
    let mut v = spm_vocab(PIECES);
    v.scores.as_mut().unwrap().pop();
    let e = Tokenizer::from_gguf_vocab(&v).unwrap_err();
    assert!(matches!(e, TokenizerError::ScoreCount { .. }), "{e}");

    // No byte tokens: a character outside the vocabulary cannot be spelled.
    let v = GgufVocab {
        model: "llama".into(),
        tokens: vec!["<unk>".into(), "<s>".into(), "</s>".into(), "▁x".into()],
        ..GgufVocab::default()
    };
    let t = Tokenizer::from_gguf_vocab(&v).unwrap();
    assert_eq!(t.encode("x", false).unwrap(), [3]);
    let e = t.encode("é", false).unwrap_err();
    assert!(matches!(e, TokenizerError::MissingByteToken { byte: 0xE2 }), "{e}");
    assert!(e.to_string().contains("<0xE2>"), "{e}");
    let e = t.decode(&[7]).unwrap_err();
    assert!(matches!(e, TokenizerError::UnknownId { id: 7, vocab_size: 4 }), "{e}");
}
