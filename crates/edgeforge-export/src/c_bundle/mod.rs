//! Model IR → a C99 bundle for microcontrollers: the weights as const arrays (int8, or int4 two per byte,
//! with a float scale per group, exactly our quantized codes; anything else as floats), a portable
//! inference source with one static arena sized here (no malloc), a demo `main.c`, a Makefile and a
//! README, and `mcu/` (Cortex-M startup, semihosting, a check program and a linker script for QEMU's
//! mps2-an500 board: `make run-mcu`). Written into a temporary folder and renamed, so a failed export leaves nothing half-written.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use edgeforge_core::arch::block_shape;
use edgeforge_core::{Model, Tensor, TensorData};

use crate::error::{ExportError, Result};

const MODEL_H: &str = include_str!("edgeforge_model.h");
const MODEL_C: &str = include_str!("edgeforge_model.c");
const MAIN_C: &str = include_str!("main.c");
/// The microcontroller build (`make mcu`, `make run-mcu`): startup, semihosting, the check's main, the
/// linker script for QEMU's mps2-an500 Cortex-M7 board.
const MCU_FILES: [(&str, &str); 5] = [
    ("mcu/startup.c", include_str!("mcu/startup.c")),
    ("mcu/semihost.c", include_str!("mcu/semihost.c")),
    ("mcu/semihost.h", include_str!("mcu/semihost.h")),
    ("mcu/mcu_main.c", include_str!("mcu/mcu_main.c")),
    ("mcu/mps2_an500.ld", include_str!("mcu/mps2_an500.ld")),
];

/// What the bundle holds, for the report.
#[derive(Debug, Clone, Default)]
pub struct CBundleSummary {
    pub dir: PathBuf,
    /// Bytes of weight data as the device stores it (codes, scales, floats).
    pub weight_bytes: u64,
    /// Floats of the static arena (KV cache for `context` tokens and buffers).
    pub arena_floats: u64,
    /// Tensors written as floats because their format has no integer layout in the bundle.
    pub float_fallbacks: Vec<String>,
}

fn c_float(v: f32) -> String {
    // Rust's shortest round-trip form, which C parses back to the same float.
    let s = format!("{v:?}");
    if s.contains(['.', 'e', 'E']) {
        format!("{s}f")
    } else {
        format!("{s}.0f")
    }
}

fn c_ident(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

fn write_list<T>(out: &mut String, items: impl IntoIterator<Item = T>, fmt: impl Fn(T) -> String) {
    for (i, item) in items.into_iter().enumerate() {
        out.push_str(&fmt(item));
        out.push(',');
        out.push(if i % 16 == 15 { '\n' } else { ' ' });
    }
}

/// Emit one matrix's arrays and return its `ef_matrix` initializer.
fn matrix(out: &mut String, name: &str, t: &Tensor, summary: &mut CBundleSummary) -> Result<String> {
    let id = c_ident(name);
    let (rows, cols) = match t.shape.as_slice() {
        &[r, c] => (r, c),
        other => return Err(ExportError::Unsupported { what: format!("{name}: expected a matrix, got shape {other:?}") }),
    };
    match &t.data {
        TensorData::Quantized(q) if q.format.symmetric && matches!(q.format.bits, 4 | 8) => {
            let group = q.format.group_size.min(cols);
            let _ = writeln!(out, "static const float {id}_scales[{}] = {{", q.scales.len());
            write_list(out, &q.scales, |s| c_float(s.to_f32()));
            out.push_str("};\n");
            summary.weight_bytes += q.scales.len() as u64 * 4 + q.codes.len() as u64;
            if q.format.bits == 8 {
                let _ = writeln!(out, "static const int8_t {id}_q[{}] = {{", q.codes.len());
                write_list(out, &q.codes, |c| (i16::from(*c) - 128).to_string());
                out.push_str("};\n");
                Ok(format!("{{EF_INT8, {rows}, {cols}, {group}, NULL, {id}_q, NULL, {id}_scales}}"))
            } else {
                // Our 4-bit stream is two codes per byte, element 2j in the low nibble, offset 8: the
                // bundle's layout, so the bytes go over as they are.
                let _ = writeln!(out, "static const uint8_t {id}_q[{}] = {{", q.codes.len());
                write_list(out, &q.codes, |c| c.to_string());
                out.push_str("};\n");
                Ok(format!("{{EF_INT4, {rows}, {cols}, {group}, NULL, NULL, {id}_q, {id}_scales}}"))
            }
        }
        _ => {
            if !t.is_float() {
                summary.float_fallbacks.push(format!("{name} ({})", t.format_name()));
            }
            let v = t.to_f32(name)?;
            summary.weight_bytes += v.len() as u64 * 4;
            let _ = writeln!(out, "static const float {id}_f[{}] = {{", v.len());
            write_list(out, &v, |x| c_float(*x));
            out.push_str("};\n");
            Ok(format!("{{EF_F32, {rows}, {cols}, {cols}, {id}_f, NULL, NULL, NULL}}"))
        }
    }
}

/// Emit a float vector as `c_decl` (e.g. `static const float blk_0_attn_norm`) and return its name.
fn vector(out: &mut String, model: &Model, name: &str, c_decl: &str, summary: &mut CBundleSummary) -> Result<String> {
    let id = c_decl.rsplit(' ').next().unwrap_or(c_decl).to_owned();
    let v = model.tensor(name)?.to_f32(name)?;
    summary.weight_bytes += v.len() as u64 * 4;
    let _ = writeln!(out, "{c_decl}[{}] = {{", v.len());
    write_list(out, &v, |x| c_float(*x));
    out.push_str("};\n");
    Ok(id)
}

fn readme(model: &Model, summary: &CBundleSummary, context: usize) -> String {
    let c = &model.config;
    format!(
        "# edgeforge C bundle\n\nA {n}-block llama-architecture model (n_embd {e}, vocabulary {v}) as portable C99: `model_weights.c` holds the\n\
         weights as const arrays ({wb} bytes: integer codes with one float scale per group, or floats), `edgeforge_model.c`\n\
         runs one token at a time with a KV cache for {ctx} tokens in one static arena of {af} floats ({ab} bytes); nothing is\n\
         allocated at run time.\n\n```sh\nmake            # gcc -std=c99 -Wall -Werror -O2\n./edgeforge_demo logits.bin 8 1 2 3   # prompt ids 1 2 3, then 8 greedy tokens\n```\n\n\
         API (`edgeforge_model.h`): `ef_reset()` clears the cache; `ef_forward(token, pos, logits)` runs token `token` at\n\
         position `pos` (0, 1, ...) and writes {v} logits. Tokenization is not included: pass token ids from the model's\n\
         tokenizer (the GGUF or tokenizer.json it came from).\n\nOn a microcontroller, keep `model_weights.c` in flash (const data) and give the arena SRAM/PSRAM; compile\n\
         `edgeforge_model.c` and `model_weights.c` into your firmware and call the API from your own loop instead of `main.c`.\n\n\
         `make run-mcu PROMPT=1,2,3 N_GEN=8` cross-compiles for a Cortex-M7 (arm-none-eabi-gcc; `mcu/` holds the startup,\n\
         semihosting and linker script for QEMU's mps2-an500 board: weights in flash, arena in SRAM, no heap) and runs it\n\
         in qemu-system-arm, printing the prompt's logits (hex float bits), the greedy ids and SysTick counts per token\n\
         (with `-icount shift=0`, one tick is 40 emulated instructions). `arm-none-eabi-size edgeforge_mcu.elf` gives flash\n\
         (text + data) and RAM (data + bss).\n",
        n = c.n_layers,
        e = c.n_embd,
        v = c.vocab_size,
        wb = summary.weight_bytes,
        ctx = context,
        af = summary.arena_floats,
        ab = summary.arena_floats * 4,
    )
}

const MAKEFILE: &str = include_str!("Makefile.in");

/// Write the bundle into `dir` (replaced if it exists) for a KV cache of `context` tokens.
pub fn write_c_bundle(model: &Model, dir: &Path, context: usize) -> Result<CBundleSummary> {
    crate::llama_blocks_only(model, "the C bundle")?;
    let c = &model.config;
    let mut summary = CBundleSummary { dir: dir.to_path_buf(), ..Default::default() };
    let shapes = (0..c.n_layers).map(|l| block_shape(model, l)).collect::<edgeforge_core::Result<Vec<_>>>()?;
    let max_kv = shapes.iter().map(|s| s.n_kv_heads * c.head_dim).max().unwrap_or(0);
    let max_q = shapes.iter().map(|s| s.n_heads * c.head_dim).max().unwrap_or(0);
    let max_ff = shapes.iter().map(|s| s.n_ff).max().unwrap_or(0);
    let arena = 2 * c.n_layers * context * max_kv + 2 * c.n_embd + 2 * max_q + context + 2 * max_ff + c.n_embd;
    summary.arena_floats = arena as u64;

    let mut w = String::from("/* Weights exported by edgeforge. */\n#include <stddef.h>\n#include \"edgeforge_model.h\"\n\n");
    let mut layers = Vec::new();
    for (l, s) in shapes.iter().enumerate() {
        let name = |k: &str| format!("blk.{l}.{k}.weight");
        let decl = |k: &str| format!("static const float {}", c_ident(&name(k)));
        let attn_norm = vector(&mut w, model, &name("attn_norm"), &decl("attn_norm"), &mut summary)?;
        let ffn_norm = vector(&mut w, model, &name("ffn_norm"), &decl("ffn_norm"), &mut summary)?;
        let mut mats = Vec::new();
        for k in ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"] {
            mats.push(matrix(&mut w, &name(k), model.tensor(&name(k))?, &mut summary)?);
        }
        layers.push(format!(
            "    {{{}, {}, {}, {attn_norm}, {}, {}, {}, {}, {ffn_norm}, {}, {}, {}}}",
            s.n_heads, s.n_kv_heads, s.n_ff, mats[0], mats[1], mats[2], mats[3], mats[4], mats[5], mats[6]
        ));
    }
    let embd = matrix(&mut w, "token_embd.weight", model.tensor("token_embd.weight")?, &mut summary)?;
    vector(&mut w, model, "output_norm.weight", "const float ef_output_norm", &mut summary)?;
    let output = match model.tensors.get("output.weight") {
        Some(t) => matrix(&mut w, "output.weight", t, &mut summary)?,
        None => "{EF_F32, 0, 0, 1, NULL, NULL, NULL, NULL}".to_owned(),
    };
    let _ = writeln!(w, "\nconst ef_layer ef_layers[EF_N_LAYERS] = {{\n{}\n}};", layers.join(",\n"));
    let _ = writeln!(w, "const ef_matrix ef_token_embd = {embd};\nconst ef_matrix ef_output = {output};");

    let mut cfg = String::from("/* Sizes of the exported model (generated by edgeforge). */\n#ifndef EF_MODEL_CONFIG_H\n#define EF_MODEL_CONFIG_H\n");
    for (k, v) in [
        ("EF_N_LAYERS", c.n_layers),
        ("EF_N_EMBD", c.n_embd),
        ("EF_HEAD_DIM", c.head_dim),
        ("EF_VOCAB", c.vocab_size),
        ("EF_CTX", context),
        ("EF_MAX_KV_WIDTH", max_kv),
        ("EF_MAX_Q_WIDTH", max_q),
        ("EF_MAX_FF", max_ff),
        ("EF_ARENA_FLOATS", arena),
        // 1 when the MLP gate is ReLU (activation-swap), 0 for the llama default SiLU.
        ("EF_ACT_RELU", usize::from(c.activation == edgeforge_core::Activation::Relu)),
    ] {
        let _ = writeln!(cfg, "#define {k} {v}");
    }
    let _ = writeln!(cfg, "#define EF_ROPE_BASE {}\n#define EF_RMS_EPS {}\n#endif", c_float(c.rope_base), c_float(c.rms_eps));

    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|source| ExportError::Io { path: parent.to_path_buf(), source })?;
    let tmp = tempfile::Builder::new().prefix(".c-bundle-").tempdir_in(parent).map_err(|source| ExportError::Io { path: parent.to_path_buf(), source })?;
    let files = [
        ("edgeforge_model.h", MODEL_H.to_owned()),
        ("edgeforge_model.c", MODEL_C.to_owned()),
        ("main.c", MAIN_C.to_owned()),
        ("model_config.h", cfg),
        ("model_weights.c", w),
        ("Makefile", MAKEFILE.to_owned()),
        ("README.md", readme(model, &summary, context)),
    ];
    let mcu = MCU_FILES.iter().map(|(n, t)| (*n, (*t).to_owned()));
    let mcu_dir = tmp.path().join("mcu");
    std::fs::create_dir_all(&mcu_dir).map_err(|source| ExportError::Io { path: mcu_dir, source })?;
    for (name, text) in files.into_iter().chain(mcu) {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).map_err(|source| ExportError::Io { path: p, source })?;
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|source| ExportError::Io { path: dir.to_path_buf(), source })?;
    }
    let kept = tmp.keep();
    std::fs::rename(&kept, dir).map_err(|source| ExportError::Io { path: dir.to_path_buf(), source })?;
    Ok(summary)
}
