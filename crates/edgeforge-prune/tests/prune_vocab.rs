//! `prune-vocab` on the reference model (SmolLM2-135M, 49152 tokens) with tinyshakespeare: the pruned
//! tokenizer round-trips any text, gives the corpus the same tokens under the new ids, and the pruned
//! model's logits over kept tokens are the original's (same hidden states, same head rows).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::AtomicBool;

use edgeforge_core::pass::{Pass, PassContext, PassOutcome};
use edgeforge_core::{load_model, Model};
use edgeforge_prune::{remove_blocks, PruneVocab, PruneVocabOptions};
use edgeforge_tests::mcu;

fn prune_vocab(model: &mut Model, slice: [f64; 2]) -> PassOutcome {
    let cancel = AtomicBool::new(false);
    let cx = PassContext { seed: 0, calibration: None, progress: &|_, _| {}, status: &|_| {}, cancel: &cancel, original: None, work_dir: None };
    let pass = PruneVocab::new(PruneVocabOptions { corpus: "tinyshakespeare".into(), slice: edgeforge_eval::datasets::Slice(slice) });
    assert!(pass.check(&model.config).is_empty());
    pass.run(model, &cx).unwrap()
}

/// For each new id, the old id of the same token text.
fn old_ids(original: &Model, pruned: &Model) -> Vec<u32> {
    (0..pruned.config.vocab_size as u32).map(|i| original.tokenizer.token_id(&pruned.tokenizer.token_text(i).unwrap()).unwrap()).collect()
}

const OTHER_TEXTS: [&str; 4] = [
    "The quick brown fox jumps over the lazy dog; naïve café, Ünïcödé, 日本語のテキスト and emoji 🦀🚀.",
    "fn main() {\n    println!(\"{}\", 0x7f_u8 as char);\n}\t\r\n",
    "Wherefore art thou Romeo? Deny thy father and refuse thy name.",
    "<|im_start|>user\nIs 3.14159 > 2.71828?<|im_end|>\n\u{1d}\u{7f}\u{0}",
];

#[test]
fn pruned_tokenizer_round_trips_and_keeps_the_corpus_tokens() {
    let path = edgeforge_tests::reference_model();
    let original = load_model(&path).unwrap();
    let mut pruned = load_model(&path).unwrap();
    let outcome = prune_vocab(&mut pruned, [0.0, 0.9]);
    eprintln!("{}", outcome.notes.join("\n"));
    let (old, new) = (original.config.vocab_size, pruned.config.vocab_size);
    assert!(new < old / 2 && new > 256, "kept {new} of {old}");
    assert_eq!(pruned.tensors["token_embd.weight"].shape, vec![new, original.config.n_embd]);
    assert_eq!(pruned.tensors["token_embd.weight"].format_name(), original.tensors["token_embd.weight"].format_name(), "rows keep their storage");
    let map = old_ids(&original, &pruned);
    let text = std::fs::read_to_string(edgeforge_tests::shared_data().join("tinyshakespeare.txt")).unwrap();
    let held_out = edgeforge_eval::datasets::text_slice(&text, [0.9, 1.0]);
    for t in OTHER_TEXTS.iter().copied().chain([held_out]) {
        let ids = pruned.tokenizer.encode(t, false).unwrap();
        // SmolLM2's vocabulary has no symbol for byte 0x1d at all: the original drops it too.
        let t = &t.replace('\u{1d}', "");
        assert_eq!(&pruned.tokenizer.decode(&ids).unwrap(), t, "round trip");
        // Our ids decode, through the map, with the original tokenizer to the same text.
        let as_old: Vec<u32> = ids.iter().map(|&i| map[i as usize]).collect();
        assert_eq!(&original.tokenizer.decode(&as_old).unwrap(), t);
    }
    // A line of the training part tokenizes to exactly the original tokens.
    let line = "First Citizen:\nBefore we proceed any further, hear me speak.\n";
    let ours: Vec<u32> = pruned.tokenizer.encode(line, false).unwrap().iter().map(|&i| map[i as usize]).collect();
    assert_eq!(ours, original.tokenizer.encode(line, false).unwrap());
    assert!(outcome.notes.iter().any(|n| n.contains("held-out text")), "{:?}", outcome.notes);
    // tokenizer.json written from the pruned tokenizer gives the same ids.
    let dir = tempfile::tempdir().unwrap();
    pruned.tokenizer.write_hf_files(dir.path()).unwrap();
    let from_json = edgeforge_tokenizer::Tokenizer::from_hf_dir(dir.path()).unwrap();
    assert_eq!(from_json.vocab_size(), new);
    for t in OTHER_TEXTS.iter().copied().chain([held_out]) {
        assert_eq!(from_json.encode(t, false).unwrap(), pruned.tokenizer.encode(t, false).unwrap());
    }
    // So does the GGUF written from the pruned model (its tokens, types and merges), and the rows match.
    let gguf = dir.path().join("pruned.gguf");
    edgeforge_export::gguf_model::write_gguf(&pruned, &gguf, "pruned").unwrap();
    let reloaded = load_model(&gguf).unwrap();
    assert_eq!(reloaded.config.vocab_size, new);
    assert_eq!(reloaded.tokenizer.encode(held_out, false).unwrap(), pruned.tokenizer.encode(held_out, false).unwrap());
}

#[test]
fn pruned_model_logits_over_kept_tokens_are_the_originals() {
    let path = edgeforge_tests::reference_model();
    let original = load_model(&path).unwrap();
    let mut pruned = load_model(&path).unwrap();
    prune_vocab(&mut pruned, [0.0, 0.9]);
    let map = old_ids(&original, &pruned);
    let prompt = "ROMEO:\nBut soft, what light through yonder window breaks?";
    let ids = pruned.tokenizer.encode(prompt, false).unwrap();
    let old: Vec<u32> = ids.iter().map(|&i| map[i as usize]).collect();
    let (a, b) = (edgeforge_tests::runtime_logits(&original, &old), edgeforge_tests::runtime_logits(&pruned, &ids));
    let (vo, vn) = (original.config.vocab_size, pruned.config.vocab_size);
    let mut worst = 0f32;
    for p in 0..ids.len() {
        for (j, &o) in map.iter().enumerate() {
            let (x, y) = (a[p * vo + o as usize], b[p * vn + j]);
            worst = worst.max((x - y).abs() / x.abs().max(1.0));
        }
    }
    eprintln!("largest relative logit difference over kept tokens: {worst:.2e}");
    assert!(worst <= 1e-5, "pruned logits differ from the original's by {worst}");
}

/// The reference model cut to its first block, its vocabulary pruned to tinyshakespeare's and quantized to
/// INT4 g32 (embedding too): its C bundle runs on the emulated Cortex-M7 (weights in the board's 16 MB region)
/// with the runtime's logits and greedy tokens. Real vocabulary, real tokenizer, real weights, one block.
#[test]
fn pruned_reference_model_runs_on_an_emulated_cortex_m7() {
    if !mcu::tools_present() {
        return;
    }
    let mut model = load_model(&edgeforge_tests::reference_model()).unwrap();
    let n = model.config.n_layers;
    remove_blocks(&mut model, &(1..n).collect::<Vec<_>>());
    edgeforge_prune::refresh_config(&mut model).unwrap();
    prune_vocab(&mut model, [0.0, 0.9]);
    edgeforge_tests::quantize_rtn(&mut model, serde_json::json!({ "bits": 4, "group_size": 32, "ignore": [] }));
    let dir = tempfile::tempdir().unwrap();
    let summary = edgeforge_export::c_bundle::write_c_bundle(&model, dir.path(), 32).unwrap();
    let prompt = model.tokenizer.encode("ROMEO:\nBut soft", false).unwrap();
    let run = mcu::run(dir.path(), &prompt, model.config.vocab_size, 3, "EXT");
    let diff = mcu::check_against_runtime("SmolLM2 1 block, pruned vocabulary, int4", &model, &prompt, &run);
    let size = mcu::tool(dir.path(), "arm-none-eabi-size", &["-A", "edgeforge_mcu.elf"]);
    let weights = size.lines().find(|l| l.starts_with(".weights")).unwrap_or_default().to_owned();
    eprintln!(
        "vocabulary {}, weights {} B ({weights}), max |MCU − runtime| = {diff:.3e}, generated {:?} = {:?}, ~{:.0} instructions/token (emulated)",
        model.config.vocab_size,
        summary.weight_bytes,
        run.generated,
        model.tokenizer.decode(&run.generated).unwrap(),
        mcu::instructions_per_token(&run.ticks[prompt.len()..])
    );
}
