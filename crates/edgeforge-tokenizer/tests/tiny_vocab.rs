//! Tokenizer rules on tiny byte-level vocabularies built here: merge order, digit splitting, control tokens
//! left unparsed, user-defined tokens cut out, missing byte symbols, BOS/EOS handling, the Hugging Face
//! files round trip, and every error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgeforge_tokenizer::{GgufVocab, Tokenizer, TokenizerError};
use serde_json::{json, Value};

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

const MERGES: [&str; 8] = ["Ġ t", "h e", "Ġt he", "1 2", "Ġ c", "a t", "! ?", "> '"];
const CONTROL: [&str; 2] = ["<|endoftext|>", "<|im_start|>"];

/// Control tokens 0 and 1, the 256 byte symbols, one token per merge, then `extra` (type, text) tokens.
fn vocab_with(merges: &[&str], extra: &[(i32, &str)]) -> GgufVocab {
    let mut tokens: Vec<String> = CONTROL.iter().map(|s| (*s).to_owned()).collect();
    let mut types = vec![3, 3];
    for s in byte_symbols() {
        tokens.push(s);
        types.push(1);
    }
    for m in merges {
        tokens.push(m.replace(' ', ""));
        types.push(1);
    }
    for (ty, text) in extra {
        tokens.push((*text).to_owned());
        types.push(*ty);
    }
    GgufVocab {
        model: "gpt2".into(),
        pre: Some("smollm".into()),
        tokens,
        token_types: Some(types),
        merges: merges.iter().map(|s| (*s).to_owned()).collect(),
        bos_id: Some(0),
        eos_id: Some(0),
        add_bos: Some(false),
        ..GgufVocab::default()
    }
}

fn vocab() -> GgufVocab {
    vocab_with(&MERGES, &[])
}

fn tok(v: &GgufVocab) -> Tokenizer {
    Tokenizer::from_gguf_vocab(v).unwrap()
}

fn texts(t: &Tokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter().map(|&i| t.token_text(i).unwrap()).collect()
}

fn encode_texts(t: &Tokenizer, text: &str) -> Vec<String> {
    texts(t, &t.encode(text, false).unwrap())
}

#[test]
fn merges_apply_by_rank() {
    let t = tok(&vocab());
    assert_eq!(encode_texts(&t, " the"), ["Ġthe"]);
    // " cat": "Ġ c" (rank 4) and "a t" (rank 5) both apply.
    assert_eq!(encode_texts(&t, " cat"), ["Ġc", "at"]);
    // "abc" with "a b" before "b c" merges the first pair; the other order merges the second.
    let t = tok(&vocab_with(&["a b", "b c"], &[]));
    assert_eq!(encode_texts(&t, "abc"), ["ab", "c"]);
    let t = tok(&vocab_with(&["b c", "a b"], &[]));
    assert_eq!(encode_texts(&t, "abc"), ["a", "bc"]);
}

#[test]
fn smollm_isolates_digits_and_gpt2_does_not() {
    // "12" is a merge, but smollm's pre-tokenizer isolates every digit first, so it never applies.
    assert_eq!(encode_texts(&tok(&vocab()), "12"), ["1", "2"]);
    let gpt2 = GgufVocab { pre: Some("gpt-2".into()), ..vocab() };
    assert_eq!(encode_texts(&tok(&gpt2), "12"), ["12"]);
}

#[test]
fn llama3_looks_whole_pre_tokens_up_before_merging() {
    // "abc" is a token no merge sequence reaches; only llama-bpe's whole-word lookup finds it.
    let v = vocab_with(&["a b"], &[(1, "abc")]);
    assert_eq!(encode_texts(&tok(&v), "abc"), ["ab", "c"]);
    let llama = GgufVocab { pre: Some("llama-bpe".into()), ..v };
    assert_eq!(encode_texts(&tok(&llama), "abc"), ["abc"]);
}

#[test]
fn control_token_text_is_not_parsed_as_a_special_token() {
    let t = tok(&vocab());
    let ids = t.encode("<|im_start|>", false).unwrap();
    // Only the merges above exist, so the text comes out byte by byte.
    assert_eq!(texts(&t, &ids), ["<", "|", "i", "m", "_", "s", "t", "a", "r", "t", "|", ">"]);
    assert!(!ids.contains(&1));
    assert_eq!(t.decode(&[1]).unwrap(), "<|im_start|>");
    assert_eq!(t.decode(&[1, ids[0]]).unwrap(), "<|im_start|><");
}

#[test]
fn user_defined_tokens_are_cut_out_of_the_text() {
    let v = vocab_with(&MERGES, &[(4, "<tool>"), (4, "café")]);
    let t = tok(&v);
    let n = v.tokens.len() as u32;
    let ids = t.encode("x<tool>y", false).unwrap();
    assert_eq!(texts(&t, &ids), ["x", "<tool>", "y"]);
    assert_eq!(ids[1], n - 2);
    assert_eq!(t.decode(&ids).unwrap(), "x<tool>y");
    // Added-token text is raw text: `é` must not go through the byte-level decoder.
    let ids = t.encode("a café é", false).unwrap();
    assert!(ids.contains(&(n - 1)), "{ids:?}");
    assert_eq!(t.decode(&ids).unwrap(), "a café é");
}

#[test]
fn a_missing_byte_symbol_blocks_merges_across_it_and_is_dropped() {
    let mut v = vocab();
    // Byte 0x04 is the 5th byte symbol (after the 2 control tokens); take it out of the vocabulary by
    // renaming it to text no input can produce.
    v.tokens[2 + 4] = "<unused-byte-04>".into();
    let t = tok(&v);
    assert_eq!(encode_texts(&t, "!?"), ["!?"]);
    // llama.cpp keeps the unknown byte as a symbol while merging, so `!` and `?` stay apart.
    assert_eq!(encode_texts(&t, "!\u{4}?"), ["!", "?"]);
    // Without the block, "> '" would merge into `>'`.
    assert_eq!(encode_texts(&t, ">'t"), [">'", "t"]);
    assert_eq!(encode_texts(&t, ">\u{4}'t"), [">", "'", "t"]);
}

#[test]
fn bos_and_eos_only_when_the_model_says_and_add_special() {
    let t = tok(&vocab());
    assert!(!t.add_bos());
    assert_eq!(t.encode("the", true).unwrap(), t.encode("the", false).unwrap());

    let t = tok(&GgufVocab { add_bos: Some(true), bos_id: Some(1), ..vocab() });
    assert_eq!(t.encode("the", true).unwrap()[0], 1);
    assert_ne!(t.encode("the", false).unwrap()[0], 1);
    assert_eq!(t.encode("", true).unwrap(), [1]);

    let t = tok(&GgufVocab { add_eos: Some(true), eos_id: Some(0), ..vocab() });
    assert_eq!(t.encode("the", true).unwrap().last(), Some(&0));

    // llama.cpp's add_bos default is per pre-tokenizer: on for the Llama 3 family, off otherwise.
    let t = tok(&GgufVocab { pre: Some("llama-bpe".into()), add_bos: None, bos_id: Some(1), ..vocab() });
    assert!(t.add_bos());
    assert_eq!(t.encode("x", true).unwrap()[0], 1);
    assert!(!tok(&GgufVocab { add_bos: None, ..vocab() }).add_bos());
}

#[test]
fn every_supported_pre_tokenizer_builds_and_round_trips_text() {
    let text = " the cat's 12 345,\n\n  héllo!? 日本 \t x";
    let pres = [
        "smollm", "gpt-2", "gpt2", "default", "llama-bpe", "llama3", "qwen2", "starcoder", "refact", "dbrx", "falcon",
        "command-r",
    ];
    for pre in pres {
        let t = tok(&GgufVocab { pre: Some(pre.into()), ..vocab() });
        assert_eq!(t.decode(&t.encode(text, false).unwrap()).unwrap(), text, "{pre}");
    }
    let t = tok(&GgufVocab { pre: None, ..vocab() });
    assert_eq!(t.decode(&t.encode(text, false).unwrap()).unwrap(), text);
}

#[test]
fn hf_files_round_trip() {
    let v = vocab_with(&MERGES, &[(4, "<tool>")]);
    let t = tok(&GgufVocab { add_bos: Some(true), bos_id: Some(1), eos_id: Some(0), ..v });
    let dir = tempfile::tempdir().unwrap();
    t.write_hf_files(dir.path()).unwrap();
    let mut names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["tokenizer.json", "tokenizer_config.json"], "temp files left behind");

    let back = Tokenizer::from_hf_dir(dir.path()).unwrap();
    let text = " the cat <|im_start|> 1234 héllo<tool>!?\n";
    assert_eq!(back.encode(text, true).unwrap(), t.encode(text, true).unwrap());
    assert_eq!(back.decode(&back.encode(text, false).unwrap()).unwrap(), text);
    assert_eq!(
        (back.bos_id(), back.eos_id(), back.add_bos(), back.vocab_size()),
        (Some(1), Some(0), true, t.vocab_size())
    );
    assert!(back.gguf_vocab().is_none());
    // Writing again over existing files works.
    back.write_hf_files(dir.path()).unwrap();
}

#[test]
fn hf_dir_special_tokens_from_config_json_and_post_processor() {
    let dir = tempfile::tempdir().unwrap();
    tok(&vocab()).write_hf_files(dir.path()).unwrap();
    let d = dir.path();

    // No tokenizer_config.json: ids from config.json, no BOS.
    std::fs::remove_file(d.join("tokenizer_config.json")).unwrap();
    std::fs::write(d.join("config.json"), r#"{"bos_token_id": 1, "eos_token_id": 0}"#).unwrap();
    let t = Tokenizer::from_hf_dir(d).unwrap();
    assert_eq!((t.bos_id(), t.eos_id(), t.add_bos()), (Some(1), Some(0), false));

    // Llama-3 style: BOS named in tokenizer_config.json, added by the tokenizer.json post-processor.
    std::fs::write(d.join("tokenizer_config.json"), r#"{"bos_token": {"content": "<|im_start|>"}}"#).unwrap();
    let path = d.join("tokenizer.json");
    let mut tj: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    tj["post_processor"] = json!({
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<|im_start|>": {"id": "<|im_start|>", "ids": [1], "tokens": ["<|im_start|>"]}}
    });
    std::fs::write(&path, serde_json::to_vec(&tj).unwrap()).unwrap();
    let t = Tokenizer::from_hf_dir(d).unwrap();
    assert_eq!((t.bos_id(), t.add_bos()), (Some(1), true));
    // The post-processor itself never runs: exactly one BOS, ours.
    let ids = t.encode("the", true).unwrap();
    assert_eq!(ids.iter().filter(|&&i| i == 1).count(), 1);
    assert_eq!(ids[0], 1);
}

#[test]
fn gguf_errors_name_the_problem() {
    let e = Tokenizer::from_gguf_vocab(&GgufVocab { pre: Some("klingon".into()), ..vocab() }).unwrap_err();
    assert!(matches!(&e, TokenizerError::UnknownPreTokenizer { pre, .. } if pre == "klingon"), "{e}");
    assert!(e.to_string().contains("smollm") && e.to_string().contains("llama-bpe"), "{e}");

    let e = Tokenizer::from_gguf_vocab(&GgufVocab { model: "bert".into(), ..vocab() }).unwrap_err();
    assert!(matches!(&e, TokenizerError::UnsupportedModel { model } if model == "bert"), "{e}");
    assert!(e.to_string().contains("`gpt2`") && e.to_string().contains("`llama`"), "{e}");
    // Gemma 4's vocabulary kind is llama.cpp's newest; not ours yet.
    let e = Tokenizer::from_gguf_vocab(&GgufVocab { model: "gemma4".into(), ..vocab() }).unwrap_err();
    assert!(matches!(&e, TokenizerError::UnsupportedModel { model } if model == "gemma4"), "{e}");

    let mut v = vocab();
    v.merges.push("zz".into());
    let e = Tokenizer::from_gguf_vocab(&v).unwrap_err();
    assert!(matches!(e, TokenizerError::BadMerge { index: 8, .. }), "{e}");

    let mut v = vocab();
    v.merges.push("zz qq".into());
    let e = Tokenizer::from_gguf_vocab(&v).unwrap_err();
    assert!(matches!(&e, TokenizerError::UnknownMergeToken { index: 8, token, .. } if token == "zz"), "{e}");

    // Both sides known, but their concatenation is not a token.
    let mut v = vocab();
    v.merges.push("x y".into());
    let e = Tokenizer::from_gguf_vocab(&v).unwrap_err();
    assert!(matches!(&e, TokenizerError::UnknownMergeToken { token, .. } if token == "xy"), "{e}");

    let e = Tokenizer::from_gguf_vocab(&GgufVocab { bos_id: Some(100_000), ..vocab() }).unwrap_err();
    assert!(matches!(e, TokenizerError::BadSpecialId { role: "bos", id: 100_000, .. }), "{e}");

    let e = Tokenizer::from_gguf_vocab(&GgufVocab { add_bos: Some(true), bos_id: None, ..vocab() }).unwrap_err();
    assert!(matches!(e, TokenizerError::MissingSpecialId { role: "bos" }), "{e}");

    let mut v = vocab();
    v.tokens[5] = v.tokens[6].clone();
    let e = Tokenizer::from_gguf_vocab(&v).unwrap_err();
    assert!(matches!(e, TokenizerError::DuplicateToken { first: 5, second: 6, .. }), "{e}");

    let mut v = vocab();
    v.token_types.as_mut().unwrap().pop();
    let e = Tokenizer::from_gguf_vocab(&v).unwrap_err();
    assert!(matches!(e, TokenizerError::TokenTypeCount { .. }), "{e}");

    let e = Tokenizer::from_gguf_vocab(&GgufVocab { model: "gpt2".into(), ..GgufVocab::default() }).unwrap_err();
    assert!(matches!(e, TokenizerError::EmptyVocab), "{e}");

    let e = tok(&vocab()).decode(&[0, 100_000]).unwrap_err();
    assert!(matches!(e, TokenizerError::UnknownId { id: 100_000, .. }), "{e}");
}

#[test]
fn duplicate_merges_keep_their_first_rank() {
    // "b c" listed again after "a b" must not lose to it.
    let mut v = vocab_with(&["b c", "a b"], &[]);
    v.merges.push("b c".into());
    assert_eq!(encode_texts(&tok(&v), "abc"), ["a", "bc"]);
}

#[test]
fn hf_dir_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let e = Tokenizer::from_hf_dir(dir.path()).unwrap_err();
    assert!(matches!(e, TokenizerError::MissingTokenizerJson { .. }), "{e}");
    assert!(e.to_string().contains("tokenizer.json"), "{e}");

    std::fs::write(dir.path().join("tokenizer.json"), "{ not json").unwrap();
    let e = Tokenizer::from_hf_dir(dir.path()).unwrap_err();
    assert!(matches!(&e, TokenizerError::Json { path, .. } if path.ends_with("tokenizer.json")), "{e}");

    tok(&vocab()).write_hf_files(dir.path()).unwrap();
    std::fs::write(dir.path().join("tokenizer_config.json"), "[1,").unwrap();
    let e = Tokenizer::from_hf_dir(dir.path()).unwrap_err();
    assert!(e.to_string().contains("tokenizer_config.json"), "{e}");

    let e = tok(&vocab()).write_hf_files(&dir.path().join("no/such/dir")).unwrap_err();
    assert!(matches!(e, TokenizerError::Io { .. }), "{e}");
}

#[test]
fn error_messages_are_one_lowercase_line() {
    let errors = [
        Tokenizer::from_gguf_vocab(&GgufVocab { pre: Some("klingon".into()), ..vocab() }).unwrap_err(),
        Tokenizer::from_gguf_vocab(&GgufVocab { model: "bert".into(), ..vocab() }).unwrap_err(),
        Tokenizer::from_hf_dir(std::path::Path::new("/nonexistent-edgeforge-dir")).unwrap_err(),
    ];
    for e in errors {
        let s = e.to_string();
        assert!(!s.contains('\n'), "{s}");
        assert!(!s.starts_with(|c: char| c.is_uppercase()), "{s}");
    }
}
