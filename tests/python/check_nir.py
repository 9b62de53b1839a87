"""Check an edgeforge NIR export with the `nir` package (the NIR project's own reader), independently of
our writer: nir.read with its default type check, every chip layer partition.json lists present with
the listed NIR type and weight shape, weights on the stated integer grid, and optionally one matrix equal
to reference values the Rust test wrote. Prints one JSON object; exits non-zero (assertion) on a mismatch.

usage: check_nir.py DIR [--exact NODE FILE] [--near NODE FILE]
  --exact: FILE holds float32 little-endian integers the node's weight must equal exactly
  --near:  FILE holds the float weights; weight * weight_scale must be within half a grid step of them
"""
import json
import pathlib
import sys
import time

import numpy as np
import nir
import nir.serialization

args = sys.argv[1:]
root = pathlib.Path(args[0])
path = root / "model.nir"
t0 = time.time()
graph = nir.read(path)  # type_check=True by default: every edge's shapes must agree
read_seconds = time.time() - t0
part = json.loads((root / "partition.json").read_text())
bits = part["weight_bits"]
lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

types = {}
for name, node in graph.nodes.items():
    types[type(node).__name__] = types.get(type(node).__name__, 0) + 1
edges = set(graph.edges)

layers = [layer for block in part["blocks"] for layer in block["chip"]]
if isinstance(part["lm_head"], dict):
    layers.append(part["lm_head"])
synapses = 0
for layer in layers:
    node = graph.nodes[layer["node"]]
    assert type(node).__name__ == layer["nir_type"], (layer["node"], type(node).__name__)
    assert list(node.weight.shape) == layer["weight_shape"], (layer["node"], node.weight.shape, layer["weight_shape"])
    assert node.weight.dtype == np.float32
    w = node.weight
    assert np.all(w == np.round(w)) and w.min() >= lo and w.max() <= hi, (layer["node"], w.min(), w.max())
    scale = np.asarray(node.metadata["weight_scale"])
    assert scale.shape == (layer["weight_shape"][0],), (layer["node"], scale.shape)
    assert int(node.metadata["weight_bits"]) == bits
    synapses += w.size
    act = layer["activation"]
    if act is not None:
        neuron = graph.nodes[act["node"]]
        assert type(neuron).__name__ == act["nir_type"] == "IF", act
        assert neuron.v_threshold.shape == (layer["weight_shape"][0],)
        assert np.allclose(neuron.r, scale), "IF r must carry the row scales"
        assert (layer["node"], act["node"]) in edges
    # Every chip layer is fed by an Input node of its segment and ends in an Output node.
    feeds = [a for a, b in graph.edges if b == layer["node"]]
    assert len(feeds) == 1 and type(graph.nodes[feeds[0]]).__name__ == "Input", (layer["node"], feeds)
assert synapses == part["totals"]["synapses"], (synapses, part["totals"])
assert len(graph.nodes) == part["totals"]["nodes"] and len(graph.edges) == part["totals"]["edges"]

checked = []
i = 1
while i < len(args):
    flag, node_name, file = args[i], args[i + 1], args[i + 2]
    i += 3
    node = graph.nodes[node_name]
    ref = np.fromfile(file, dtype="<f4").reshape(node.weight.shape)
    if flag == "--exact":
        assert np.array_equal(node.weight, ref), f"{node_name}: weights differ from the reference codes"
    elif flag == "--near":
        scale = np.asarray(node.metadata["weight_scale"], dtype=np.float64)[:, None]
        err = np.abs(node.weight.astype(np.float64) * scale - ref)
        assert np.all(err <= scale / 2 * (1 + 1e-5) + 1e-12), f"{node_name}: max error {err.max()} over half a step"
        # and the integers are exactly round(ref / scale), halves away from zero: an independent re-quantization
        x = ref.astype(np.float32) / np.asarray(node.metadata["weight_scale"], dtype=np.float32)[:, None]  # f32, as Rust divides
        assert np.array_equal(node.weight, np.clip(np.sign(x) * np.floor(np.abs(x) + 0.5), -hi, hi).astype(np.float32)), node_name
    else:
        raise SystemExit(f"unknown flag {flag}")
    checked.append(f"{flag[2:]} {node_name}")

print(json.dumps({
    "version": nir.serialization.read_version(path),
    "nodes": len(graph.nodes),
    "edges": len(graph.edges),
    "types": types,
    "synapses": synapses,
    "checked": checked,
    "read_seconds": round(read_seconds, 2),
    "file_bytes": path.stat().st_size,
}))
