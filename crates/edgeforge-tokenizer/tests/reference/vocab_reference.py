"""Reference token ids from llama.cpp for edgeforge-tokenizer's tests.

    python3 vocab_reference.py dump VOCAB.gguf
        Print the file's tokenizer metadata (as gguf-py, llama.cpp's own reader, sees it) as one JSON object;
        the llama.cpp-suite test reads llama.cpp's models/ggml-vocab-*.gguf through this.

    python3 vocab_reference.py fixtures LLAMA_CPP_DIR OUT_DIR
        For each family, cut a small vocabulary (a few thousand tokens) out of llama.cpp's own
        models/ggml-vocab-<name>.gguf, keeping merges consistent, write it as GGUF to a temporary directory,
        run llama.cpp's `llama-tokenize` on every stress text with it, and write OUT_DIR/<family>.json with
        the small vocabulary, the texts, the ids and the llama.cpp version. Deterministic: same llama.cpp,
        same files.

Needs the `gguf` package (pinned by scripts/test.sh). The subsets are taken from llama.cpp's test
vocabularies rather than learned, so their merges and scores are the real ones of each family.
"""

import json
import os
import subprocess
import sys
import tempfile

import gguf

# The stress texts: digits and long numbers, CJK, emoji, code with tabs and indentation, whitespace runs,
# newlines, contractions, accented Latin, Arabic, mixed case, control-token text (plain text here).
STRESS = [
    "Hello world! The year 2026 had 365 days; pi is 3.14159265358979 and 1234567890123 is long.",
    "don't I'll we've they're she'd IT'S You'LL DON'T y'all",
    "日本語のテキストと中文文本，还有한국어 텍스트。",
    "emoji: 🦙🚀👍🏽 👨‍👩‍👧 ❤️ 🇫🇷",
    "def f(x):\n\tif x > 0:\n\t\treturn x ** 2  # square\n    else:\n        return -x\n",
    "spaces:  two   three    four        eight\t\ttabs \n\n\nthree newlines\r\nCRLF",
    "Crème brûlée, naïve café, Ångström, Łódź, São Paulo, Straße, ÆØÅ æøå",
    "مرحبا بالعالم، هذا نص عربي ١٢٣٤٥",
    "MiXeD CaSe WORDS and camelCaseIdentifiers, snake_case_names, SCREAMING_CASE",
    "<s> </s> <|im_start|>user<|im_end|> <|begin_of_text|> <unk> <start_of_turn>",
    "   leading spaces and trailing   ",
    "a\u00a0non-breaking\u2009thin\u3000ideographic space",
    "123 4567 89012 345678 0.5 -42 1e10 ١٢٣ ½ ⅓ ²³",
    "\n",
    " ",
    "",
]
STRESS.append("\n".join(STRESS))

# family -> (source vocabulary in llama.cpp's models/, changes to the metadata, extra tokens)
FAMILIES = {
    # Llama 3.x: byte-level BPE, pre-tokenizer "llama-bpe".
    "llama-bpe": ("ggml-vocab-llama-bpe.gguf", {}, []),
    # Qwen2 / Qwen2.5 / Qwen3: byte-level BPE, pre-tokenizer "qwen2".
    "qwen2": ("ggml-vocab-qwen2.gguf", {}, []),
    # GPT-2 regex.
    "gpt-2": ("ggml-vocab-gpt-2.gguf", {}, []),
    # SmolLM2's row of llama.cpp's table (digits split, then GPT-2's regex).
    "smollm": ("ggml-vocab-starcoder.gguf", {"tokenizer.ggml.pre": "smollm"}, []),
    # llama.cpp's fallback regexes for a byte-level vocabulary that names no pre-tokenizer.
    "default": ("ggml-vocab-gpt-2.gguf", {"tokenizer.ggml.pre": None}, []),
    # Llama 2 / Mistral: SentencePiece-style with scores and <0xNN> byte fallback, space prefix.
    "llama-spm": ("ggml-vocab-llama-spm.gguf", {}, []),
    # Phi-3 / 3.5: SentencePiece-style, control tokens for its chat markers.
    "phi-3": ("ggml-vocab-phi-3.gguf", {}, []),
    # Gemma 1/2/3 files are SentencePiece-style without the space prefix and with whitespace-run and newline
    # pieces; llama.cpp ships no Gemma 1-3 vocabulary, so this is the llama-spm subset with Gemma's settings
    # and such pieces (type, score, text) added.
    "gemma": (
        "ggml-vocab-llama-spm.gguf",
        {"tokenizer.ggml.add_space_prefix": False},
        [
            (1, -5.0, "\n"), (1, -6.0, "\n\n"), (1, -7.0, "\t"), (1, -8.0, "\t\t"),
            (1, -9.0, "▁▁"), (1, -10.0, "▁▁▁▁"), (1, -11.0, "▁▁▁▁▁▁▁▁"),
            (3, 0.0, "<start_of_turn>"), (3, 0.0, "<end_of_turn>"), (4, 0.0, "<start_of_image>"),
        ],
    ),
}

# Normal tokens kept besides the ones the stress texts need: the first merges (BPE) or ids (SPM).
BASE_COUNT = 1500


def field_value(field):
    if field.types[0] == gguf.GGUFValueType.ARRAY:
        sub = field.types[1]
        items = [field.parts[i] for i in field.data]
        if sub == gguf.GGUFValueType.STRING:
            return [bytes(x).decode("utf-8") for x in items]
        return [x.tolist()[0] for x in items]
    if field.types[0] == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    return field.parts[field.data[0]].tolist()[0]


def read_vocab(path):
    """The tokenizer.ggml.* metadata of a GGUF file, keyed by the part after `tokenizer.ggml.`."""
    reader = gguf.GGUFReader(path)
    out = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml."):
            out[key[len("tokenizer.ggml."):]] = field_value(field)
    return out


def llama_tokenize(bin_dir, model, text, no_bos):
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as f:
        f.write(text.encode("utf-8"))
        name = f.name
    try:
        cmd = [os.path.join(bin_dir, "llama-tokenize"), "-m", model, "-f", name, "--ids", "--log-disable",
               "--no-escape", "--no-parse-special"]
        if no_bos:
            cmd.append("--no-bos")
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(name)
    return json.loads(out.strip().splitlines()[-1])


def subset_bpe(v, needed):
    tokens, types, merges = v["tokens"], v["token_type"], v["merges"]
    index = {t: i for i, t in enumerate(tokens)}
    keep = {i for i, t in enumerate(tokens) if types[i] != 1 or len(t) == 1}
    made_by = {}
    for rank, m in enumerate(merges):
        a, b = m.split(" ", 1)
        made_by.setdefault(a + b, (a, b))
    for m in merges[:BASE_COUNT]:
        needed.add(index["".join(m.split(" ", 1))])

    def add(i):
        if i in keep:
            return
        keep.add(i)
        pair = made_by.get(tokens[i])
        if pair:
            add(index[pair[0]])
            add(index[pair[1]])

    for i in sorted(needed):
        add(i)
    kept_merges = []
    for m in merges:
        a, b = m.split(" ", 1)
        if index.get(a) in keep and index.get(b) in keep and index.get(a + b) in keep:
            kept_merges.append(m)
    return sorted(keep), kept_merges


def subset_spm(v, needed):
    tokens, types = v["tokens"], v["token_type"]
    index = {t: i for i, t in enumerate(tokens)}
    keep = {i for i in range(len(tokens)) if types[i] != 1}
    keep |= {i for i in range(len(tokens)) if types[i] == 1}.intersection(range(BASE_COUNT + 259))
    for i in sorted(needed):
        t = tokens[i]
        # Every piece of a needed token that is itself a token, so the merges that reach it stay possible.
        for a in range(len(t)):
            for b in range(a + 1, len(t) + 1):
                j = index.get(t[a:b])
                if j is not None:
                    keep.add(j)
    return sorted(keep), None


def write_gguf(path, v, keep, merges, changes, extra):
    old_to_new = {old: new for new, old in enumerate(keep)}
    tokens = [v["tokens"][i] for i in keep]
    types = [v["token_type"][i] for i in keep]
    scores = [v["scores"][i] for i in keep] if "scores" in v else None
    for ty, score, text in extra:
        if text in tokens:
            continue
        tokens.append(text)
        types.append(ty)
        if scores is not None:
            scores.append(score)
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("edgeforge tokenizer fixture")
    w.add_tokenizer_model(v["model"])
    pre = changes.get("tokenizer.ggml.pre", v.get("pre"))
    if pre is not None:
        w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    if scores is not None:
        w.add_token_scores(scores)
    if merges is not None:
        w.add_token_merges(merges)
    meta = {}
    for key in ["bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id"]:
        if key in v and v[key] in old_to_new:
            meta[key] = old_to_new[v[key]]
            w.add_uint32("tokenizer.ggml." + key, meta[key])
    for key in ["add_bos_token", "add_eos_token", "add_space_prefix"]:
        value = changes.get("tokenizer.ggml." + key, v.get(key))
        if value is not None:
            meta[key] = value
            w.add_bool("tokenizer.ggml." + key, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    out = {"model": v["model"], "pre": pre, "tokens": tokens, "token_type": types}
    if scores is not None:
        out["scores"] = scores
    if merges is not None:
        out["merges"] = merges
    out.update(meta)
    return out


def llama_cpp_version(bin_dir):
    out = subprocess.run([os.path.join(bin_dir, "llama-tokenize"), "--version"], capture_output=True, text=True)
    return " ".join(line.strip() for line in (out.stdout + out.stderr).splitlines() if line.strip())


def fixtures(llama_cpp, out_dir):
    bin_dir = os.path.join(llama_cpp, "build", "bin")
    version = llama_cpp_version(bin_dir)
    with tempfile.TemporaryDirectory() as tmp:
        for family, (source, changes, extra) in FAMILIES.items():
            full_path = os.path.join(llama_cpp, "models", source)
            v = read_vocab(full_path)
            needed = set()
            for text in STRESS:
                if text:
                    needed.update(llama_tokenize(bin_dir, full_path, text, no_bos=True))
            subset = subset_spm if v["model"] == "llama" else subset_bpe
            keep, merges = subset(v, needed)
            small = os.path.join(tmp, family + ".gguf")
            vocab = write_gguf(small, v, keep, merges, changes, extra)
            cases = []
            for text in STRESS:
                cases.append({
                    "text": text,
                    "ids": llama_tokenize(bin_dir, small, text, no_bos=False),
                    "ids_no_special": llama_tokenize(bin_dir, small, text, no_bos=True),
                })
            fixture = {
                "family": family,
                "source": "subset of llama.cpp models/" + source,
                "llama_cpp": version,
                "produced_by": "crates/edgeforge-tokenizer/tests/reference/vocab_reference.py fixtures",
                "ids": "llama-tokenize -f TEXT --ids --log-disable --no-escape --no-parse-special; "
                       "ids_no_special adds --no-bos (add_special = false); ids has add_special = the model's add_bos",
                "vocab": vocab,
                "cases": cases,
            }
            with open(os.path.join(out_dir, family + ".json"), "w", encoding="utf-8") as f:
                json.dump(fixture, f, ensure_ascii=False, separators=(",", ":"))
                f.write("\n")
            print(f"{family}: {len(vocab['tokens'])} tokens, {len(merges or [])} merges", file=sys.stderr)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "dump":
        json.dump(read_vocab(sys.argv[2]), sys.stdout, ensure_ascii=False)
    elif len(sys.argv) == 4 and sys.argv[1] == "fixtures":
        fixtures(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
