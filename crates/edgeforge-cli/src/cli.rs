//! Command-line definitions (clap). Flag names are the recipe keys in kebab-case.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "edgeforge", version, about = "Make small language models fit edge hardware")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Describe a model: architecture, parameters by kind, tensor types, bits per weight, file size.
    Inspect(InspectArgs),
    /// Evaluate a model.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Convert a model to another format.
    Convert(ConvertArgs),
    /// Tokenize a text with a model's tokenizer (to compare with llama-tokenize).
    Tokenize(TokenizeArgs),
    /// Run a recipe: evaluate, run the passes (checkpoint after each), evaluate, export, report.
    Run(RunArgs),
    /// Check a recipe without running it (files, datasets, options, pass order).
    Validate(ValidateArgs),
    /// Print the recipe JSON Schema (for editor completion).
    #[command(after_help = "Example:\n  edgeforge schema > recipes/recipe.schema.json")]
    Schema,
    /// Compare two reports; exit 0 if every gate holds, 1 if one fails, 2 on bad input.
    Compare(CompareArgs),
    /// Rank tensors, blocks or projection kinds by the KL divergence that quantizing each alone causes, and
    /// suggest recipe overrides that keep the most sensitive at 8 bits.
    Sensitivity(SensitivityArgs),
    /// Run many variants of one recipe (a grid and/or points from SWEEP.yaml) locally or on a Ray cluster,
    /// rank them by the sweep's objective and print the chosen one.
    Sweep(SweepArgs),
    /// Aggregate every report.json under a folder: summary.md, summary.csv, summary.svg (size vs perplexity).
    Summarize(SummarizeArgs),
    /// Check an export folder against its manifest.json (sizes, sha256, no extra files) and, with
    /// --public-key, its ed25519 signature; exit 1 on any mismatch.
    Verify(VerifyArgs),
    /// Make an ed25519 key pair for signing manifests (`edgeforge run --sign-key NAME.key`).
    Keygen(KeygenArgs),
    /// Serve an export folder over an OpenAI-compatible HTTP API, after verifying every file against its
    /// manifest (and signature); sandboxed (landlock, seccomp, rlimits) once loaded, monitored by /metrics.
    Serve(ServeArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SensitivityUnit {
    /// Every projection of every block.
    Tensor,
    /// All projections of one block.
    Block,
    /// One projection kind across all blocks.
    Kind,
}

#[derive(Debug, Args)]
#[command(after_help = "Example (which blocks lose most at 4 bits, and recipe overrides keeping the worst 3 at 8 bits):\n  edgeforge sensitivity --model model.gguf --by block --bits 4 --keep 3 --out sens")]
pub struct SensitivityArgs {
    /// The model: a .gguf file or a Hugging Face folder.
    #[arg(long)]
    pub model: PathBuf,
    /// The text scored: a file, or a dataset name or file name from datasets/.
    #[arg(long, default_value = "wiki.test.raw")]
    pub text: String,
    /// Tokens per chunk.
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Chunks of --ctx tokens scored per unit (each unit costs one forward pass per chunk).
    #[arg(long, default_value_t = 4)]
    pub chunks: usize,
    /// Bits of the round-to-nearest quantization applied to each unit: 3, 4 or 8.
    #[arg(long, default_value_t = 4)]
    pub bits: u8,
    /// 32, 64, 128, 256 or per-channel.
    #[arg(long, default_value = "128")]
    pub group_size: String,
    /// Asymmetric grid (zero point per group).
    #[arg(long)]
    pub asym: bool,
    /// What one unit is: one tensor, one block (all its projections) or one projection kind (all blocks).
    #[arg(long = "by", value_enum, default_value = "block")]
    pub by: SensitivityUnit,
    /// How many of the most sensitive units the suggested overrides keep at 8 bits.
    #[arg(long, default_value_t = 3)]
    pub keep: usize,
    /// Write sensitivity.json and sensitivity.md here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub threads: ThreadsArg,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  edgeforge sweep sweeps/smollm2-int4-grid.yaml --out sweeps/out\n  edgeforge sweep sweep.yaml --out /shared/out --executor ray --ray-address http://127.0.0.1:8265")]
pub struct SweepArgs {
    /// The sweep file (base recipe, axes, objective).
    pub sweep: PathBuf,
    /// Output folder: variants/NAME/ (recipe.yaml, run.log, report, artifacts) and sweep-summary.md/.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Where variants run: `local` (child processes here) or `ray` (jobs on a Ray cluster).
    #[arg(long, default_value = "local")]
    pub executor: String,
    /// The Ray head's dashboard address, for --executor ray (e.g. http://127.0.0.1:8265).
    #[arg(long)]
    pub ray_address: Option<String>,
    /// Variants running at once (default: the cores here).
    #[arg(long)]
    pub max_parallel: Option<usize>,
    /// Threads of each variant's run (default: the cores divided by --max-parallel).
    #[arg(long)]
    pub threads_per_variant: Option<usize>,
    /// Seed for every variant (default: each recipe's calibration seed).
    #[arg(long)]
    pub seed: Option<u64>,
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  edgeforge summarize runs/")]
pub struct SummarizeArgs {
    /// A folder searched recursively for reports (report.json, or any .json that is an edgeforge report).
    pub dir: PathBuf,
    /// Where to write the summary files (default: DIR).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  edgeforge run recipes/smollm2-gptq-q4_0.yaml --out runs/q4_0\n  edgeforge run recipe.yaml --out runs/x --dry-run\n  edgeforge run recipe.yaml --out runs/x --resume --threads 2")]
pub struct RunArgs {
    /// The recipe YAML file.
    pub recipe: PathBuf,
    /// Output folder (report.json, report.md, artifacts, checkpoints).
    #[arg(long)]
    pub out: PathBuf,
    /// Continue after the last matching checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// Print the plan with estimated time and memory, run nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub threads: ThreadsArg,
    /// Seed (default: the recipe's calibration seed, else 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Sign manifest.json with this ed25519 key (hex seed file from `edgeforge keygen`).
    #[arg(long)]
    pub sign_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  edgeforge verify runs/q4_0 --public-key keys/edgeforge-signing.pub")]
pub struct VerifyArgs {
    /// An export folder with manifest.json.
    pub dir: PathBuf,
    /// Public key (hex) to check manifest.sig against.
    #[arg(long)]
    pub public_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(after_help = "Endpoints: POST /v1/completions, POST /v1/chat/completions (stream: true for server-sent events), GET /v1/models, /metrics, /healthz, /readyz.\nExit 2 (one line naming the file) if any file of DIR does not match manifest.json or the signature does not verify.\n\nExample:\n  edgeforge serve runs/q4_0 --listen 127.0.0.1:8080 --public-key keys/edgeforge-signing.pub --max-queue 16\n  curl -s 127.0.0.1:8080/v1/chat/completions -d '{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":32}'")]
pub struct ServeArgs {
    /// An export folder with manifest.json and a GGUF artifact (what `edgeforge run` writes).
    pub dir: PathBuf,
    /// Address and port to listen on; port 0 picks a free port (logged at startup).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Public key (hex, from `edgeforge keygen`) that manifest.sig must verify under; required when the folder is signed.
    #[arg(long)]
    pub public_key: Option<PathBuf>,
    /// Inference threads (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Requests that may wait for the model (one more runs); beyond that 429 (default 16).
    #[arg(long, default_value_t = 16)]
    pub max_queue: usize,
    /// Most tokens one request may generate, whatever its max_tokens (default 256).
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Context length in tokens: prompt plus generation (default: the model's, at most 2048).
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Time limit of one request in seconds, waiting in the queue included; the output is cut there (default 120).
    #[arg(long, default_value_t = 120)]
    pub timeout_s: u64,
    /// Activation rounding of block-quantized weights: `fast` (llama.cpp's 8-bit activation blocks for decode
    /// steps, f32 for the prompt), `llamacpp` (8-bit everywhere) or `exact` (f32 everywhere); default fast.
    #[arg(long, value_enum, default_value_t = RoundingArg::Fast)]
    pub rounding: RoundingArg,
    /// Do not sandbox the server after loading (no landlock, seccomp or resource limits); warns at startup.
    #[arg(long)]
    pub no_sandbox: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  edgeforge keygen --out keys && edgeforge run recipe.yaml --out run --sign-key keys/edgeforge-signing.key\n  edgeforge verify run --public-key keys/edgeforge-signing.pub")]
pub struct KeygenArgs {
    /// Folder for the key pair (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// File name stem: writes NAME.key (the private seed, hex, owner-only 0600) and NAME.pub (hex).
    #[arg(long, default_value = "edgeforge-signing")]
    pub name: String,
    /// Replace an existing key pair of that name (otherwise refused).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  edgeforge validate recipes/*.yaml")]
pub struct ValidateArgs {
    /// One or more recipe YAML files; every one is checked and every error reported.
    pub recipes: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompareFormat {
    Md,
    Json,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  edgeforge compare runs/main/report.json runs/pr/report.json --max-ppl-increase-pct 2 --max-size-bytes 90000000\n  edgeforge compare base.json new.json --recipe recipes/smollm2-gptq-q4_0.yaml --format json\n\nWith no gate flag and no --recipe, the gates recorded in both reports' recipes apply; with none anywhere, compare refuses (exit 2) unless --no-gates is given.")]
pub struct CompareArgs {
    /// The baseline report.json (its result model is the reference).
    pub base: PathBuf,
    /// The report.json under test (its result model and artifacts are gated).
    pub new: PathBuf,
    /// Fail when NEW's perplexity is more than this many percent above BASE's (a percentage: 2 means +2%).
    #[arg(long, value_name = "PERCENT")]
    pub max_ppl_increase_pct: Option<f64>,
    /// Fail when NEW's decode tokens/s divided by BASE's is below this ratio (1.0 = as fast).
    #[arg(long, value_name = "RATIO")]
    pub min_decode_speedup: Option<f64>,
    /// Fail when any artifact NEW wrote (GGUF, ONNX, C bundle, ... each checked on its own, in bytes on disk) is larger than this many bytes; a report without artifacts is checked on its in-memory model bytes.
    #[arg(long, value_name = "BYTES")]
    pub max_size_bytes: Option<u64>,
    /// Take the gates from this recipe's `gates` block (flags override).
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// Print the comparison without checking any gate (otherwise compare refuses to run with no gate).
    #[arg(long, conflicts_with_all = ["max_ppl_increase_pct", "min_decode_speedup", "max_size_bytes", "recipe"])]
    pub no_gates: bool,
    /// Output: a Markdown table (for pull-request comments) or JSON.
    #[arg(long, value_enum, default_value = "md")]
    pub format: CompareFormat,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  edgeforge inspect model.gguf\n  edgeforge inspect hf-folder/ --tensors --json")]
pub struct InspectArgs {
    /// A .gguf file or a Hugging Face folder.
    pub path: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also list every tensor with its shape and type.
    #[arg(long)]
    pub tensors: bool,
    /// Also list the GGUF metadata keys (arrays summarized by length).
    #[arg(long)]
    pub metadata: bool,
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Perplexity with llama.cpp's protocol (non-overlapping chunks, second half of each chunk scored).
    Perplexity(PerplexityArgs),
    /// Prefill and decode speed, time to first token, per-token p50/p95, peak memory.
    Latency(LatencyArgs),
    /// KL divergence of a model's next-token distributions from a base model's, and top-1 agreement,
    /// at the positions perplexity scores.
    Kld(KldArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "Example (how far a quantized file's next-token distributions are from the original's):\n  edgeforge eval kld --base model-f16.gguf --model model-q4_0.gguf --text wiki.test.raw --ctx 512 --chunks 10")]
pub struct KldArgs {
    /// The reference model (e.g. the unquantized one).
    #[arg(long)]
    pub base: PathBuf,
    /// The model to compare with it.
    #[arg(long)]
    pub model: PathBuf,
    /// The text scored: a file, or a dataset name or file name from datasets/.
    #[arg(long, default_value = "wiki.test.raw")]
    pub text: String,
    /// Tokens per chunk (the second half of each chunk is scored, as in perplexity).
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Score at most this many chunks (default: all).
    #[arg(long)]
    pub chunks: Option<usize>,
    #[command(flatten)]
    pub threads: ThreadsArg,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Example (the same test as `llama-bench -m model.gguf -p 512 -n 128 -r 5 -t 2`):\n  edgeforge eval latency --model model.gguf -p 512 -n 128 -r 5 --threads 2")]
pub struct LatencyArgs {
    /// The model: a .gguf file or a Hugging Face folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Prompt tokens of the prefill test (llama-bench's `pp N`, `-p`); at least 1 and at most the model's context.
    #[arg(long, short = 'p', default_value_t = 512, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub prompt_tokens: usize,
    /// Tokens of the generation test (llama-bench's `tg N`, `-n`), decoded one at a time from an empty
    /// context; 0 skips it.
    #[arg(long, short = 'n', default_value_t = 128)]
    pub gen_tokens: usize,
    /// Timed repetitions of each test (llama-bench's `-r`), after one untimed warm-up run.
    #[arg(long, short = 'r', alias = "repetitions", default_value_t = 5, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub repeats: usize,
    /// Seed of the random prompt and generation tokens (same seed: same tokens).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Activation rounding of block-quantized weights: `fast` (llama.cpp's 8-bit activation blocks and
    /// integer dot products for decode steps, f32 for the prompt batch), `llamacpp` (8-bit for every
    /// product) or `exact` (f32 activations everywhere).
    #[arg(long, value_enum, default_value_t = RoundingArg::Fast)]
    pub rounding: RoundingArg,
    #[command(flatten)]
    pub threads: ThreadsArg,
    /// Print one JSON object on stdout (llama-bench's `-o json` figures, plus peak RSS and notes).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Example (the figure `llama-perplexity -m model.gguf -f wiki.test.raw -c 512 --chunks 25` prints):\n  edgeforge eval perplexity --model model.gguf --text wiki.test.raw --ctx 512 --chunks 25")]
pub struct PerplexityArgs {
    /// A .gguf file or a Hugging Face folder.
    #[arg(long)]
    pub model: PathBuf,
    /// A text file, or a dataset name or file name from datasets/ (e.g. wiki.test.raw).
    #[arg(long)]
    pub text: String,
    /// Tokens per chunk.
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Tokens per forward call.
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
    /// Score at most this many chunks (default: all).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Evaluate one block at a time (weights read from the file's map and released after each block,
    /// chunks' hidden states held instead, 256 MiB at a time): for models larger than memory. Same figure
    /// as `--batch` equal to `--ctx`; `--batch` is ignored.
    #[arg(long)]
    pub stream: bool,
    /// Activation rounding of block-quantized weights: `exact` (our float figure) or `llamacpp` (8-bit
    /// activation blocks, to reproduce llama-perplexity's figure on quantized files).
    #[arg(long, value_enum, default_value_t = RoundingArg::Exact)]
    pub rounding: RoundingArg,
    #[command(flatten)]
    pub threads: ThreadsArg,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// How block-quantized weights (Q4_0, Q8_0, ...) round the activations they multiply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoundingArg {
    /// f32 activations times the exactly dequantized weights (the float path's figures).
    Exact,
    /// Activations rounded to 8-bit blocks and integer dot products, as llama.cpp computes.
    Llamacpp,
    /// `llamacpp`'s integer products for decode steps (up to 8 tokens) and, on x86, for prompt batches of the 32-element formats; `exact` for other batches (K-quants, F16/BF16): the fastest of both.
    Fast,
}

impl RoundingArg {
    pub fn runtime(self) -> edgeforge_runtime::Rounding {
        match self {
            RoundingArg::Exact => edgeforge_runtime::Rounding::Exact,
            RoundingArg::Llamacpp => edgeforge_runtime::Rounding::Q8,
            RoundingArg::Fast => edgeforge_runtime::Rounding::Q8Decode,
        }
    }
}

#[derive(Debug, Args)]
pub struct ThreadsArg {
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ConvertTarget {
    /// A Hugging Face folder: config.json, model.safetensors, tokenizer.json.
    HfSafetensors,
    /// A GGUF file llama.cpp loads (tensors as they are: float, ggml blocks, or our integer codes mapped onto
    /// ggml blocks); --dtype does not apply.
    Gguf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FloatDtype {
    F32,
    F16,
    Bf16,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  edgeforge convert model.gguf --to hf-safetensors --out model-hf --dtype f16\n  edgeforge convert model-hf --to gguf --out model.gguf")]
pub struct ConvertArgs {
    /// The model to convert (.gguf file or HF folder).
    pub input: PathBuf,
    /// The output format.
    #[arg(long)]
    pub to: ConvertTarget,
    /// Output folder (hf-safetensors, written atomically) or file (gguf).
    #[arg(long)]
    pub out: PathBuf,
    /// Float type of the written weights; f32 keeps dequantized GGUF weights exactly.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: FloatDtype,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Example (compare with `llama-tokenize -m model.gguf -f text.txt --ids`):\n  edgeforge tokenize --model model.gguf --text text.txt --ids --add-special")]
pub struct TokenizeArgs {
    /// The model whose tokenizer is used: a .gguf file or a Hugging Face folder.
    #[arg(long)]
    pub model: PathBuf,
    /// A text file, a dataset name or file name from datasets/, or `-` for standard input.
    #[arg(long)]
    pub text: String,
    /// Print the ids, one per line (default: the token count, with the text's size and source).
    #[arg(long)]
    pub ids: bool,
    /// Prepend BOS if the model's add_bos says so (as llama-tokenize does by default).
    #[arg(long)]
    pub add_special: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every flag and positional argument of every command has a description, and every command that runs
    /// something shows an example (`edgeforge CMD --help`).
    #[test]
    fn every_flag_has_help_and_every_command_an_example() {
        fn walk(cmd: &clap::Command, path: &str, problems: &mut Vec<String>) {
            let here = format!("{path} {}", cmd.get_name()).trim().to_owned();
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none_or(|h| h.to_string().trim().is_empty()) && a.get_long_help().is_none() {
                    problems.push(format!("{here}: argument `{id}` has no description"));
                }
            }
            if cmd.has_subcommands() {
                for sub in cmd.get_subcommands() {
                    walk(sub, &here, problems);
                }
            } else if path.is_empty() || !cmd.get_after_help().is_some_and(|h| h.to_string().contains("Example")) {
                if !path.is_empty() {
                    problems.push(format!("{here}: no example in --help"));
                }
            }
        }
        let mut problems = Vec::new();
        walk(&super::Cli::command(), "", &mut problems);
        assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
    }
}
