//! `edgeforge sensitivity`: rank units by the damage quantizing each alone does, suggest overrides.

use std::fmt::Write as _;

use anyhow::anyhow;
use edgeforge_core::TensorData;
use edgeforge_eval::datasets::resolve_text;
use edgeforge_eval::sensitivity::{sensitivity as rank, Granularity, SensitivityResult};
use edgeforge_eval::PerplexityOptions;
use edgeforge_quant::options::{Bits, GroupSize, GroupSizeRepr};
use serde::Serialize;

use crate::cli::{SensitivityArgs, SensitivityUnit};
use crate::commands::{load, print_json};
use crate::exit::Failure;
use crate::progress;

#[derive(Serialize)]
struct SensitivityReport {
    model: String,
    model_sha256: String,
    text: String,
    text_sha256: String,
    format: String,
    threads: usize,
    edgeforge_version: &'static str,
    seconds: f64,
    result: SensitivityResult,
    /// Recipe overrides that keep the `keep` most sensitive units at 8 bits.
    suggested_overrides_yaml: String,
}

fn parse_group(s: &str) -> Result<GroupSize, Failure> {
    let repr = s.parse::<u64>().map_or_else(|_| GroupSizeRepr::Named(s.to_owned()), GroupSizeRepr::Elements);
    GroupSize::try_from(repr).map_err(|e| Failure::BadInput(anyhow!("--group-size: {e}")))
}

fn overrides_yaml(r: &SensitivityResult, keep: usize) -> String {
    let mut o = String::from("overrides:\n");
    for u in r.units.iter().take(keep) {
        let _ = writeln!(o, "  - {{ tensors: \"{}\", bits: 8 }}   # KL {:.4}", u.unit, u.mean_kld);
    }
    o
}

fn markdown(rep: &SensitivityReport) -> String {
    let r = &rep.result;
    let mut o = String::new();
    let _ = writeln!(o, "# Quantization sensitivity: {}\n", rep.model);
    let _ = writeln!(
        o,
        "Each unit quantized alone ({}, round-to-nearest), the rest untouched; KL divergence from the untouched model over {} of {} tokens ({}) of {}. Untouched perplexity {:.4}. {}, {:.1} s.\n",
        rep.format,
        edgeforge_core::summary::count(r.chunks as u64, "chunk"),
        r.ctx,
        edgeforge_core::summary::count(r.positions as u64, "position"),
        rep.text,
        r.base_perplexity,
        edgeforge_core::summary::count(rep.threads as u64, "thread"),
        rep.seconds
    );
    let _ = writeln!(o, "| rank | unit | mean KL | top-1 agreement | perplexity |\n|---|---|---|---|---|");
    for (i, u) in r.units.iter().enumerate() {
        let _ = writeln!(o, "| {} | `{}` | {:.5} | {:.2}% | {:.4} |", i + 1, u.unit, u.mean_kld, 100.0 * u.top1_agreement_frac, u.perplexity);
    }
    let _ = writeln!(o, "\nSuggested recipe overrides (add under the quantization pass):\n\n```yaml\n{}```", rep.suggested_overrides_yaml);
    o
}

pub fn sensitivity(a: SensitivityArgs) -> Result<(), Failure> {
    let bits = Bits::try_from(a.bits).map_err(|e| Failure::BadInput(anyhow!("--bits: {e}")))?;
    let group = parse_group(&a.group_size)?;
    if a.ctx < 4 || a.chunks == 0 {
        return Err(Failure::BadInput(anyhow!("--ctx must be at least 4 and --chunks at least 1")));
    }
    let text = resolve_text(&a.text)?;
    let mut model = load(&a.model)?;
    let tokens = model.tokenizer.encode(&text.text, true).map_err(|e| Failure::BadInput(e.into()))?;
    let bos = if model.tokenizer.add_bos() { model.tokenizer.bos_id() } else { None };
    let opts = PerplexityOptions { ctx: a.ctx, batch: a.ctx, max_chunks: Some(a.chunks) };
    let granularity = match a.by {
        SensitivityUnit::Tensor => Granularity::Tensor,
        SensitivityUnit::Block => Granularity::Block,
        SensitivityUnit::Kind => Granularity::Kind,
    };
    let symmetric = !a.asym;
    let perturb = move |name: &str, t: &edgeforge_core::Tensor| -> Result<TensorData, String> {
        let values = t.to_f32(name).map_err(|e| e.to_string())?;
        let row_len = t.row_len();
        let format = edgeforge_core::quantized::QuantFormat { bits: bits.get(), group_size: group.for_row(row_len), symmetric };
        Ok(TensorData::Quantized(edgeforge_quant::rtn::quantize(&values, row_len, format, true)))
    };
    let started = std::time::Instant::now();
    let bar = progress::items_bar(0, "units");
    let result = rank(&mut model, &tokens, bos, &opts, granularity, &perturb, |done, total, unit| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(unit.to_owned());
        std::ops::ControlFlow::Continue(())
    })?;
    bar.finish_and_clear();
    let format = format!("int{}-{}-{}", bits.get(), a.group_size, if symmetric { "sym" } else { "asym" });
    let report = SensitivityReport {
        model: a.model.display().to_string(),
        model_sha256: model.source.sha256.clone(),
        text: text.path.display().to_string(),
        text_sha256: text.sha256.clone(),
        format,
        threads: rayon::current_num_threads(),
        edgeforge_version: env!("CARGO_PKG_VERSION"),
        seconds: started.elapsed().as_secs_f64(),
        suggested_overrides_yaml: overrides_yaml(&result, a.keep),
        result,
    };
    let md = markdown(&report);
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir).map_err(|e| Failure::BadInput(anyhow!("{}: {e}", dir.display())))?;
        let json = serde_json::to_vec_pretty(&report).map_err(|e| Failure::Internal(e.into()))?;
        for (name, bytes) in [("sensitivity.json", json), ("sensitivity.md", md.clone().into_bytes())] {
            let path = dir.join(name);
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, bytes)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|e| Failure::Internal(anyhow!("{}: {e}", path.display())))?;
        }
    }
    if a.json {
        return print_json(&report);
    }
    print!("{md}");
    Ok(())
}
