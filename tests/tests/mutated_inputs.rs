//! Property tests: valid GGUF, safetensors and recipe files, mutated (bit flips, truncations, length fields
//! set to extremes), go through the library loaders in-process. Every case must end in `Ok` or a typed
//! error, never a panic, and no single allocation may exceed `MAX_ALLOC_BYTES` (a counting global allocator
//! records the largest one): a size read from a file must be checked before it sizes anything.
//!
//! Failing cases found are kept in `proptest-regressions/mutated_inputs.txt` and replayed first.

#![allow(clippy::unwrap_used, clippy::expect_used, unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use edgeforge_export::hf::{write_hf_dir, FloatType};
use edgeforge_tests::{tiny_gguf, TinySpec};
use proptest::prelude::*;

/// Largest single allocation allowed while loading a file of a few KB.
const MAX_ALLOC_BYTES: usize = 64 << 20;

/// The system allocator, recording the largest single request since the last `reset`.
struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to `System` with the caller's own layout and pointer; the only addition is an
// atomic maximum, which neither allocates nor touches the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Run `f`, return its result and the largest single allocation it made. The tests of this file run on
/// parallel threads and the maximum is process-wide, so measurements take turns.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    LARGEST.store(0, Ordering::Relaxed);
    let out = f();
    (out, LARGEST.load(Ordering::Relaxed))
}

// ---- mutations ---------------------------------------------------------------------------------------------

/// Values a length or count field is set to: the ends of each width, and sizes just under the plausibility
/// caps a loader may apply (16,000,000 blocks once made `inspect` allocate 3 GB).
const EXTREMES: [u64; 11] = [0, 1, 65_535, 16_000_000, 1 << 24, u32::MAX as u64, 1 << 32, 1 << 40, 1 << 62, 1 << 63, u64::MAX];

#[derive(Debug, Clone)]
enum Mutation {
    /// Flip bit `bit` of the byte at `at` (taken modulo the length).
    Flip { at: usize, bit: u8 },
    /// Keep the first `keep` bytes (modulo the length).
    Truncate { keep: usize },
    /// Overwrite a known length field (index modulo the field list) with an extreme value.
    Field { field: usize, value: u64 },
    /// Overwrite 8 bytes anywhere with an extreme value.
    Anywhere { at: usize, value: u64 },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let extreme = prop::sample::select(EXTREMES.to_vec());
    prop_oneof![
        3 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        1 => any::<usize>().prop_map(|keep| Mutation::Truncate { keep }),
        4 => (any::<usize>(), extreme.clone()).prop_map(|(field, value)| Mutation::Field { field, value }),
        1 => (any::<usize>(), extreme).prop_map(|(at, value)| Mutation::Anywhere { at, value }),
    ]
}

/// A length field: byte offset and width (4 or 8).
type Field = (usize, usize);

fn apply(bytes: &mut Vec<u8>, fields: &[Field], m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    match *m {
        Mutation::Flip { at, bit } => {
            let n = bytes.len();
            bytes[at % n] ^= 1 << bit;
        }
        Mutation::Truncate { keep } => bytes.truncate(keep % bytes.len()),
        Mutation::Field { field, value } => {
            if let Some(&(at, width)) = fields.get(field % fields.len().max(1)) {
                if at + width <= bytes.len() {
                    bytes[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
                }
            }
        }
        Mutation::Anywhere { at, value } => {
            let at = at % bytes.len();
            let end = (at + 8).min(bytes.len());
            bytes[at..end].copy_from_slice(&value.to_le_bytes()[..end - at]);
        }
    }
}

/// `cases` per CI run; `PROPTEST_CASES=N` runs N instead (a longer search on a spare machine).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases),
        // Shrinking replays the loader; a short budget still yields a small failing mutation list.
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    }
}

/// A scratch folder for the run.
fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

// ---- GGUF --------------------------------------------------------------------------------------------------

fn valid_gguf() -> &'static (Vec<u8>, Vec<Field>) {
    static G: OnceLock<(Vec<u8>, Vec<Field>)> = OnceLock::new();
    G.get_or_init(|| {
        let spec = TinySpec { n_layers: 1, ..TinySpec::default() };
        let bytes = tiny_gguf(&spec).to_bytes();
        let fields = gguf_length_fields(&bytes);
        (bytes, fields)
    })
}

/// Every count, length, type, offset and integer-value field of a valid GGUF v3 header, found by walking it.
fn gguf_length_fields(b: &[u8]) -> Vec<Field> {
    let u32_at = |p: usize| u32::from_le_bytes(b[p..p + 4].try_into().unwrap());
    let u64_at = |p: usize| u64::from_le_bytes(b[p..p + 8].try_into().unwrap()) as usize;
    let mut fields = vec![(4, 4), (8, 8), (16, 8)];
    let (n_tensors, n_kv) = (u64_at(8), u64_at(16));
    let mut p = 24;
    let string = |p: &mut usize, fields: &mut Vec<Field>| {
        fields.push((*p, 8));
        *p += 8 + u64_at(*p);
    };
    let scalar_len = |t: u32| match t {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        _ => 8,
    };
    for _ in 0..n_kv {
        string(&mut p, &mut fields);
        let t = u32_at(p);
        fields.push((p, 4));
        p += 4;
        match t {
            8 => string(&mut p, &mut fields),
            9 => {
                let et = u32_at(p);
                fields.push((p, 4));
                let n = u64_at(p + 4);
                fields.push((p + 4, 8));
                p += 12;
                for _ in 0..n {
                    if et == 8 {
                        string(&mut p, &mut fields);
                    } else {
                        p += scalar_len(et);
                    }
                }
            }
            // Integer scalars are sizes (block_count, embedding_length, head counts, token ids): fields too.
            t @ (4 | 5 | 10 | 11) => {
                fields.push((p, scalar_len(t)));
                p += scalar_len(t);
            }
            t => p += scalar_len(t),
        }
    }
    for _ in 0..n_tensors {
        string(&mut p, &mut fields);
        let n_dims = u32_at(p) as usize;
        fields.push((p, 4));
        p += 4;
        for _ in 0..n_dims {
            fields.push((p, 8));
            p += 8;
        }
        fields.extend([(p, 4), (p + 4, 8)]);
        p += 12;
    }
    fields
}

fn load_gguf_bytes(bytes: &[u8]) {
    // One file per thread: tests run in parallel, and a file rewritten while another test maps it is a race.
    let thread: String = format!("{:?}", std::thread::current().id()).chars().filter(char::is_ascii_digit).collect();
    let path = scratch().join(format!("m{thread}.gguf"));
    std::fs::write(&path, bytes).unwrap();
    let (result, largest) = largest_allocation(|| edgeforge_core::load_model(&path).map(|m| m.tensors.len()));
    // A typed error is fine; its message names the file.
    if let Err(e) = &result {
        assert!(e.to_string().contains(&*path.to_string_lossy()), "error does not name the file: {e}");
    }
    assert!(largest < MAX_ALLOC_BYTES, "largest allocation {largest} bytes for a {}-byte file ({result:?})", bytes.len());
}

proptest! {
    #![proptest_config(config(10_000))]

    #[test]
    fn mutated_gguf_loads_or_fails_typed(muts in prop::collection::vec(mutation(), 1..4)) {
        let (valid, fields) = valid_gguf();
        let mut bytes = valid.clone();
        for m in &muts {
            apply(&mut bytes, fields, m);
        }
        load_gguf_bytes(&bytes);
    }
}

#[test]
fn the_allocation_bound_is_measured() {
    let ((), largest) = largest_allocation(|| drop(std::hint::black_box(vec![0u8; 100 << 20])));
    assert!(largest >= 100 << 20, "{largest}");
}

/// Not random: every length, count, type and offset field of the header, set to every extreme in turn.
#[test]
fn every_gguf_header_field_at_every_extreme() {
    let (valid, fields) = valid_gguf();
    eprintln!("{} header fields x {} values = {} files", fields.len(), EXTREMES.len(), fields.len() * EXTREMES.len());
    for &(at, width) in fields {
        for value in EXTREMES {
            let mut bytes = valid.clone();
            bytes[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
            load_gguf_bytes(&bytes);
        }
    }
}

#[test]
fn gguf_walker_finds_the_header_fields() {
    let (bytes, fields) = valid_gguf();
    // 19 metadata entries + 1-layer model's 11 tensors, each with several fields.
    assert!(fields.len() > 100, "{}", fields.len());
    assert!(fields.iter().all(|&(at, w)| at + w <= bytes.len()));
    load_gguf_bytes(bytes);
}

// ---- safetensors (a Hugging Face folder) --------------------------------------------------------------------

/// The tiny model as a Hugging Face folder (kept for the run; each case rewrites its model.safetensors)
/// and the folder's valid model.safetensors.
fn hf_dir() -> (&'static Path, &'static [u8]) {
    static H: OnceLock<(tempfile::TempDir, PathBuf, Vec<u8>)> = OnceLock::new();
    let (_, hf, st) = H.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path().join("tiny.gguf");
        tiny_gguf(&TinySpec { n_layers: 1, ..TinySpec::default() }).write(&g).unwrap();
        let model = edgeforge_core::load_model(&g).unwrap();
        let hf = dir.path().join("hf");
        write_hf_dir(&model, &hf, FloatType::F32, false).unwrap();
        let st = std::fs::read(hf.join("model.safetensors")).unwrap();
        (dir, hf, st)
    });
    (hf, st)
}

/// Rewrite one number in the JSON header (shape or data offset) as `value`, fixing the header length.
fn set_header_number(st: &[u8], which: usize, value: &str) -> Vec<u8> {
    let hlen = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&st[8..8 + hlen]).unwrap();
    let mut runs = Vec::new();
    let mut start = None;
    for (i, c) in header.char_indices() {
        match (c.is_ascii_digit(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                runs.push(s..i);
                start = None;
            }
            _ => {}
        }
    }
    let Some(run) = runs.get(which % runs.len().max(1)).cloned() else { return st.to_vec() };
    let new_header = format!("{}{value}{}", &header[..run.start], &header[run.end..]);
    let mut out = (new_header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(new_header.as_bytes());
    out.extend_from_slice(&st[8 + hlen..]);
    out
}

fn load_hf_with(st: &[u8]) {
    let (dir, _) = hf_dir();
    std::fs::write(dir.join("model.safetensors"), st).unwrap();
    let (result, largest) = largest_allocation(|| edgeforge_core::load_model(dir).map(|m| m.tensors.len()));
    assert!(largest < MAX_ALLOC_BYTES, "largest allocation {largest} bytes for a {}-byte file ({result:?})", st.len());
}

proptest! {
    #![proptest_config(config(10_000))]

    #[test]
    fn mutated_safetensors_load_or_fail_typed(
        number in proptest::option::of((any::<usize>(), prop::sample::select(vec!["0", "1", "4294967295", "18446744073709551615", "9223372036854775808", "99999999999999999999999", "-1"]))),
        muts in prop::collection::vec(mutation(), 0..3),
    ) {
        let (_, valid) = hf_dir();
        let mut st = match number {
            Some((which, value)) => set_header_number(valid, which, value),
            None => valid.to_vec(),
        };
        // The one binary length field: the header length.
        for m in &muts {
            apply(&mut st, &[(0, 8)], m);
        }
        load_hf_with(&st);
    }
}

// ---- recipes -----------------------------------------------------------------------------------------------

const RECIPE: &str = "version: 1\nmodel: tiny.gguf\ncalibration: { dataset: wikitext-2-valid, samples: 4, seq_len: 16, seed: 0 }\npasses:\n  - pass: quantize-rtn\n    bits: 8\n    group_size: 32\n    overrides:\n      - { tensors: \"blk.*.attn_v.weight\", bits: 8 }\n  - pass: tune-scales\n    steps: 5\neval:\n  perplexity: { dataset: wikitext-2-test, ctx: 64, chunks: 2 }\n  latency: { prompt_tokens: 8, gen_tokens: 4, threads: 1, repeats: 2 }\ntargets:\n  - { format: gguf, profile: raspberry-pi-5 }\ngates:\n  baseline: input\n  max_ppl_increase_pct: 5.0\n  max_size_bytes: 100000000\n";

/// Recipe numbers are text: a length set to an extreme is a number replaced by one.
const RECIPE_EXTREMES: [&str; 9] =
    ["0", "-1", "4294967295", "18446744073709551615", "9223372036854775808", "99999999999999999999999", "1e308", "-0.0", ".nan"];

fn recipe_dir() -> &'static Path {
    static D: OnceLock<tempfile::TempDir> = OnceLock::new();
    D.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        tiny_gguf(&TinySpec { n_layers: 1, ..TinySpec::default() }).write(&dir.path().join("tiny.gguf")).unwrap();
        dir
    })
    .path()
}

fn replace_number(text: &str, which: usize, value: &str) -> String {
    let spans: Vec<(usize, usize)> = text
        .char_indices()
        .filter(|&(i, c)| c.is_ascii_digit() && !text[..i].ends_with(|p: char| p.is_ascii_digit() || p == '.'))
        .map(|(i, _)| (i, i + text[i..].find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len() - i)))
        .collect();
    let (s, e) = spans[which % spans.len()];
    format!("{}{value}{}", &text[..s], &text[e..])
}

proptest! {
    #![proptest_config(config(10_000))]

    #[test]
    fn mutated_recipes_parse_or_fail_typed(
        number in proptest::option::of((any::<usize>(), prop::sample::select(RECIPE_EXTREMES.to_vec()))),
        muts in prop::collection::vec(mutation(), 0..3),
    ) {
        let text = match number {
            Some((which, value)) => replace_number(RECIPE, which, value),
            None => RECIPE.to_owned(),
        };
        let mut bytes = text.into_bytes();
        for m in &muts {
            // Recipes have no binary length fields; `Field` mutations fall back to flips.
            let m = match m { Mutation::Field { field, .. } => Mutation::Flip { at: *field, bit: (*field % 8) as u8 }, m => m.clone() };
            apply(&mut bytes, &[], &m);
        }
        let path = recipe_dir().join("r.yaml");
        std::fs::write(&path, &bytes).unwrap();
        // The error, if any, as its message and whether it is a recipe diagnostic (which carries the place).
        let (error, largest) = largest_allocation(|| {
            let result = match edgeforge_recipe::parse_recipe(&path) {
                Ok(rf) => edgeforge_recipe::validate::validate(&rf, false).err(),
                Err(e) => Some(e),
            };
            result.map(|e| (e.to_string(), matches!(e, edgeforge_recipe::RecipeError::Invalid(_))))
        });
        if let Some((message, diagnostic)) = &error {
            assert!(*diagnostic || message.contains("r.yaml"), "{message}");
        }
        prop_assert!(largest < MAX_ALLOC_BYTES, "largest allocation {} bytes ({:?})", largest, error);
    }
}
