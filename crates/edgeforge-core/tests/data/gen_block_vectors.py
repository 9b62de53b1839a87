"""Regenerate crates/edgeforge-core/tests/data/block_vectors.json: random blocks of each ggml type and their
values as gguf-py's reference dequantizers compute them (an implementation independent of ours)."""
import json, sys
import numpy as np
from gguf import GGMLQuantizationType as T, GGML_QUANT_SIZES
from gguf.quants import dequantize

rng = np.random.default_rng(20261124)
# (type, byte offsets of f16 scale fields inside a block)
TYPES = {"Q8_0": (T.Q8_0, [0]), "Q4_0": (T.Q4_0, [0]), "Q4_1": (T.Q4_1, [0, 2]), "Q5_0": (T.Q5_0, [0]),
         "Q5_1": (T.Q5_1, [0, 2]), "Q4_K": (T.Q4_K, [0, 2]), "Q6_K": (T.Q6_K, [208]),
         "F16": (T.F16, []), "BF16": (T.BF16, [])}
out = {}
for name, (qt, f16_fields) in TYPES.items():
    block_elems, block_bytes = GGML_QUANT_SIZES[qt]
    n_blocks = 3 if block_elems > 1 else 64
    raw = bytearray(rng.integers(0, 256, size=n_blocks * block_bytes, dtype=np.uint8).tobytes())
    if name == "F16":
        raw = bytearray(rng.normal(size=n_blocks).astype(np.float16).tobytes())
    if name == "BF16":
        raw = bytearray((rng.normal(size=n_blocks).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes())
    for b in range(n_blocks):
        for off in f16_fields:
            v = np.float16(rng.uniform(-0.1, 0.1)).tobytes()
            raw[b * block_bytes + off: b * block_bytes + off + 2] = v
    vals = dequantize(np.frombuffer(bytes(raw), dtype=np.uint8), qt).astype(np.float32).reshape(-1)
    assert np.all(np.isfinite(vals))
    out[name] = {"hex": bytes(raw).hex(), "values": [float(x) for x in vals]}
json.dump(out, open(sys.argv[1], "w"))
