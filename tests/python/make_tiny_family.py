"""Write a tiny random model of each supported family twice: as GGUF with llama.cpp's exact tensor names,
layout and metadata (what convert_hf_to_gguf.py would write), and as a Hugging Face folder (config.json +
model.safetensors in transformers' names and layout: q/k rows un-permuted for llama, Gemma norms stored as
w - 1, Phi-3's fused qkv_proj / gate_up_proj). Both hold the same model, F32, from a fixed numpy seed.

The vocabulary is the reference model's (SmolLM2: gpt2-style BPE, pre-tokenizer "smollm"), copied from
its GGUF, so every family's tiny model tokenizes with a tokenizer edgeforge and llama.cpp both load. (Each
family's own tokenizer type is the tokenizer crate's business, not this file's.) The HF folder gets no
tokenizer files: the Rust tests add the ones our tokenizer writes.

usage: make_tiny_family.py REFERENCE.gguf OUT_DIR   (writes OUT_DIR/<family>.gguf and OUT_DIR/<family>-hf/)
"""
import json
import math
import struct
import sys
from pathlib import Path

import numpy as np
import gguf

SEED = 20261204
N_EMBD = 64
N_FF = 128
CONTEXT = 2048

# name -> (gguf arch, spec). Spec keys: layers, heads, kv_heads, head_dim, tied, and the family's features.
FAMILIES = {
    "llama": dict(arch="llama", layers=2, heads=4, kv_heads=2, head_dim=16, tied=True),
    "llama3": dict(arch="llama", layers=2, heads=4, kv_heads=2, head_dim=16, tied=False,
                   llama3=dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=64)),
    "qwen2": dict(arch="qwen2", layers=2, heads=4, kv_heads=2, head_dim=16, tied=True, rope_base=1_000_000.0),
    "qwen3": dict(arch="qwen3", layers=2, heads=4, kv_heads=2, head_dim=16, tied=True, rope_base=1_000_000.0),
    "gemma2": dict(arch="gemma2", layers=4, heads=4, kv_heads=2, head_dim=32, tied=True, window=16,
                   attn_softcap=5.0, final_softcap=10.0),
    "gemma3": dict(arch="gemma3", layers=6, heads=4, kv_heads=1, head_dim=32, tied=True, window=16,
                   rope_base=1_000_000.0, rope_base_swa=10_000.0, linear_factor=2.0),
    "phi3": dict(arch="phi3", layers=2, heads=4, kv_heads=4, head_dim=16, tied=False),
}


def field_value(reader, key):
    f = reader.fields[key]
    if f.types[0] == gguf.GGUFValueType.ARRAY:
        if f.types[1] == gguf.GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [f.parts[i].tolist()[0] for i in f.data]
    if f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    return f.parts[f.data[0]].tolist()[0]


def reference_vocab(path):
    r = gguf.GGUFReader(path)
    v = {k: field_value(r, k) for k in r.fields if k.startswith("tokenizer.ggml.") and k != "tokenizer.ggml.scores"}
    return v


def write_vocab(w, v):
    w.add_tokenizer_model(v["tokenizer.ggml.model"])
    w.add_tokenizer_pre(v["tokenizer.ggml.pre"])
    w.add_token_list(v["tokenizer.ggml.tokens"])
    w.add_token_types(v["tokenizer.ggml.token_type"])
    w.add_token_merges(v["tokenizer.ggml.merges"])
    for key, add in [("bos_token_id", w.add_bos_token_id), ("eos_token_id", w.add_eos_token_id),
                     ("unknown_token_id", w.add_unk_token_id), ("padding_token_id", w.add_pad_token_id)]:
        if "tokenizer.ggml." + key in v:
            add(v["tokenizer.ggml." + key])
    for key, add in [("add_bos_token", w.add_add_bos_token), ("add_eos_token", w.add_add_eos_token)]:
        if "tokenizer.ggml." + key in v:
            add(bool(v["tokenizer.ggml." + key]))


def llama3_factors(p, head_dim, base):
    # convert_hf_to_gguf.py's computation (float32, as torch does there).
    freqs = (1.0 / (np.float32(base) ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)))).astype(np.float32)
    old = np.float32(p["original_max_position_embeddings"])
    low, high, factor = np.float32(p["low_freq_factor"]), np.float32(p["high_freq_factor"]), np.float32(p["factor"])
    out = []
    for freq in freqs:
        wavelen = np.float32(2 * math.pi) / freq
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(float(factor))
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(float(np.float32(1) / ((1 - smooth) / factor + smooth)))
    return np.array(out, dtype=np.float32)


def make_weights(spec, n_vocab, rng):
    """Canonical (GGUF-named, GGUF-layout, split) tensors as numpy arrays in PyTorch [out, in] order."""
    e, hd, h, kvh, ff = N_EMBD, spec["head_dim"], spec["heads"], spec["kv_heads"], N_FF
    q, kv = h * hd, kvh * hd
    lin = lambda o, i, gain=1.0: (rng.standard_normal((o, i)) * gain / math.sqrt(i)).astype(np.float32)
    norm = lambda n: (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)
    t = {"token_embd.weight": (0.3 * rng.standard_normal((n_vocab, e))).astype(np.float32), "output_norm.weight": norm(e)}
    if not spec["tied"]:
        t["output.weight"] = lin(n_vocab, e, 2.0)
    arch = spec["arch"]
    for l in range(spec["layers"]):
        b = f"blk.{l}."
        t[b + "attn_norm.weight"] = norm(e)
        t[b + "attn_q.weight"] = lin(q, e, 2.0)
        t[b + "attn_k.weight"] = lin(kv, e, 2.0)
        t[b + "attn_v.weight"] = lin(kv, e)
        t[b + "attn_output.weight"] = lin(e, q)
        t[b + "ffn_norm.weight"] = norm(e)
        t[b + "ffn_gate.weight"] = lin(ff, e)
        t[b + "ffn_up.weight"] = lin(ff, e)
        t[b + "ffn_down.weight"] = lin(e, ff)
        if arch == "qwen2":
            for s, n in [("attn_q.bias", q), ("attn_k.bias", kv), ("attn_v.bias", kv)]:
                t[b + s] = (0.5 * rng.standard_normal(n)).astype(np.float32)
        if arch in ("qwen3", "gemma3"):
            t[b + "attn_q_norm.weight"] = norm(hd)
            t[b + "attn_k_norm.weight"] = norm(hd)
        if arch in ("gemma2", "gemma3"):
            t[b + "post_attention_norm.weight"] = norm(e)
            t[b + "post_ffw_norm.weight"] = norm(e)
    return t


def gguf_tensors(spec, t):
    """llama.cpp's file layout: Phi-3 fused, Llama 3 factors as rope_freqs.weight."""
    out = dict(t)
    if spec["arch"] == "phi3":
        for l in range(spec["layers"]):
            b = f"blk.{l}."
            out[b + "attn_qkv.weight"] = np.concatenate([out.pop(b + "attn_q.weight"), out.pop(b + "attn_k.weight"), out.pop(b + "attn_v.weight")])
            out[b + "ffn_up.weight"] = np.concatenate([out.pop(b + "ffn_gate.weight"), out[b + "ffn_up.weight"]])
    if "llama3" in spec:
        out["rope_freqs.weight"] = llama3_factors(spec["llama3"], spec["head_dim"], spec.get("rope_base", 10000.0))
    return out


def write_gguf(path, spec, t, vocab):
    arch = spec["arch"]
    w = gguf.GGUFWriter(str(path), arch)
    # Not the family's name: llama.cpp sets Phi-3 chat-token attributes when general.name contains "phi3",
    # and this vocabulary has none of those tokens.
    w.add_name("edgeforge tiny random model")
    w.add_context_length(CONTEXT)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(spec["layers"])
    w.add_feed_forward_length(N_FF)
    w.add_head_count(spec["heads"])
    w.add_head_count_kv(spec["kv_heads"])
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(spec.get("rope_base", 10000.0))
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    if arch in ("gemma2", "gemma3"):
        w.add_key_length(spec["head_dim"])
        w.add_value_length(spec["head_dim"])
    else:
        w.add_rope_dimension_count(spec["head_dim"])
    if arch == "llama":
        w.add_vocab_size(len(vocab["tokenizer.ggml.tokens"]))
    if "window" in spec:
        w.add_sliding_window(spec["window"])
    if "attn_softcap" in spec:
        w.add_attn_logit_softcapping(spec["attn_softcap"])
        w.add_final_logit_softcapping(spec["final_softcap"])
    if "rope_base_swa" in spec:
        w.add_rope_freq_base_swa(spec["rope_base_swa"])
    if "linear_factor" in spec:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(spec["linear_factor"])
    if arch == "phi3":
        w.add_rope_scaling_orig_ctx_len(CONTEXT)
        w.add_sliding_window(0)
    write_vocab(w, vocab)
    for name, arr in gguf_tensors(spec, t).items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


HF_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight", "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias", "attn_k.bias": "self_attn.k_proj.bias", "attn_v.bias": "self_attn.v_proj.bias",
    "attn_q_norm.weight": "self_attn.q_norm.weight", "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight", "ffn_down.weight": "mlp.down_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
HF_GEMMA = {"post_attention_norm.weight": "post_attention_layernorm.weight", "ffn_norm.weight": "pre_feedforward_layernorm.weight",
            "post_ffw_norm.weight": "post_feedforward_layernorm.weight"}
HF_GLOBAL = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"}


def unpermute(w, n_head):
    # The inverse of convert_hf_to_gguf.py's LlamaModel.permute: GGUF adjacent-pair rows -> HF rotate-half.
    hd = w.shape[0] // n_head
    return w.reshape(n_head, hd // 2, 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)


def hf_tensors(spec, t):
    arch = spec["arch"]
    gemma = arch in ("gemma2", "gemma3")
    out = {}
    for name, arr in t.items():
        if name in HF_GLOBAL:
            hf = HF_GLOBAL[name]
        else:
            _, l, suffix = name.split(".", 2)
            table = {**HF_LAYER, **HF_GEMMA} if gemma else HF_LAYER
            hf = f"model.layers.{l}.{table[suffix]}"
            if arch == "llama" and suffix == "attn_q.weight":
                arr = unpermute(arr, spec["heads"])
            if arch == "llama" and suffix == "attn_k.weight":
                arr = unpermute(arr, spec["kv_heads"])
        if gemma and name.endswith("norm.weight"):
            arr = (arr - np.float32(1.0)).astype(np.float32)
        out[hf] = arr
    if arch == "phi3":
        for l in range(spec["layers"]):
            p = f"model.layers.{l}."
            out[p + "self_attn.qkv_proj.weight"] = np.concatenate([out.pop(p + "self_attn." + s + "_proj.weight") for s in "qkv"])
            out[p + "mlp.gate_up_proj.weight"] = np.concatenate([out.pop(p + "mlp.gate_proj.weight"), out.pop(p + "mlp.up_proj.weight")])
    return out


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        data = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def hf_config(spec, vocab):
    arch = spec["arch"]
    model_type = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma2": "gemma2", "gemma3": "gemma3_text", "phi3": "phi3"}[arch]
    archs = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "gemma2": "Gemma2ForCausalLM",
             "gemma3_text": "Gemma3ForCausalLM", "phi3": "Phi3ForCausalLM"}[model_type]
    c = {
        "architectures": [archs], "model_type": model_type, "hidden_size": N_EMBD, "intermediate_size": N_FF,
        "num_hidden_layers": spec["layers"], "num_attention_heads": spec["heads"], "num_key_value_heads": spec["kv_heads"],
        "head_dim": spec["head_dim"], "vocab_size": len(vocab["tokenizer.ggml.tokens"]), "max_position_embeddings": CONTEXT,
        "rms_norm_eps": 1e-6, "rope_theta": spec.get("rope_base", 10000.0), "rope_scaling": None,
        "tie_word_embeddings": spec["tied"], "torch_dtype": "float32",
    }
    if "llama3" in spec:
        c["rope_scaling"] = {"rope_type": "llama3", **spec["llama3"]}
    if arch in ("gemma2", "gemma3"):
        c["hidden_activation"] = "gelu_pytorch_tanh"
        c["query_pre_attn_scalar"] = spec["head_dim"]
        c["sliding_window"] = spec["window"]
    else:
        c["hidden_act"] = "silu"
    if arch == "gemma2":
        c["attn_logit_softcapping"] = spec["attn_softcap"]
        c["final_logit_softcapping"] = spec["final_softcap"]
    if arch == "gemma3":
        c["rope_local_base_freq"] = spec["rope_base_swa"]
        c["sliding_window_pattern"] = 6
        c["rope_scaling"] = {"rope_type": "linear", "factor": spec["linear_factor"]}
        c["final_logit_softcapping"] = None
        c["attn_logit_softcapping"] = None
    if arch == "qwen2":
        c["use_sliding_window"] = False
    if arch == "phi3":
        c["sliding_window"] = None
    return c


def main():
    ref, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    vocab = reference_vocab(ref)
    n_vocab = len(vocab["tokenizer.ggml.tokens"])
    for i, (name, spec) in enumerate(FAMILIES.items()):
        rng = np.random.default_rng(SEED + i)
        t = make_weights(spec, n_vocab, rng)
        write_gguf(out / f"{name}.gguf", spec, t, vocab)
        hf = out / f"{name}-hf"
        hf.mkdir(exist_ok=True)
        write_safetensors(hf / "model.safetensors", hf_tensors(spec, t))
        (hf / "config.json").write_text(json.dumps(hf_config(spec, vocab), indent=1) + "\n")
    print(" ".join(FAMILIES))


if __name__ == "__main__":
    main()
