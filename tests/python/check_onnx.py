"""Load an edgeforge ONNX decoder folder with onnx and onnxruntime, run a prompt, write the logits.

usage: check_onnx.py MODEL_DIR TOKEN_IDS(comma-separated) OUT.bin

Checks: onnx.checker on the model (it does not validate com.microsoft nodes), node domains within
{"", "com.microsoft"}, every op known to this onnxruntime build. Then, on the CPU provider with graph
optimizations disabled (ORT_DISABLE_ALL, so fusions cannot change the numbers):
  (a) the whole prompt in one call with empty past_key_values.*,
  (b) the same prompt one token at a time, each call's present.* fed back as past_key_values.*,
  (c) a batch of two copies of the prompt (must equal (a) row for row),
  (d) the prompt after two masked pad tokens (its logits must equal (a)).
OUT.bin gets the float32 logits of (a) then (b), each [len(ids), vocab]. One JSON line on stdout gives
the versions, the ops, and the differences found by (c) and by a run with ORT_ENABLE_ALL (for information).
"""
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort


def session(path, level):
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def empty_past(sess, batch):
    feeds = {}
    for i in sess.get_inputs():
        if i.name.startswith("past_key_values."):
            _, n_kv, _, head_dim = i.shape
            feeds[i.name] = np.zeros((batch, n_kv, 0, head_dim), dtype=np.float32)
    return feeds


def run(sess, ids, past, mask=None):
    batch, seq = ids.shape
    total = seq + (next(iter(past.values())).shape[2] if past else 0)
    if mask is None:
        mask = np.ones((batch, total), dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": mask, **past}
    names = [o.name for o in sess.get_outputs()]
    outs = dict(zip(names, sess.run(names, feeds)))
    present = {n.replace("present.", "past_key_values."): v for n, v in outs.items() if n.startswith("present.")}
    for name, v in present.items():
        assert v.shape[2] == total, f"{name}: {v.shape[2]} positions, expected {total}"
    return outs["logits"], present


def main():
    model_dir, ids_text, out_path = sys.argv[1:4]
    path = os.path.join(model_dir, "model.onnx")
    onnx.checker.check_model(path)
    model = onnx.load(path, load_external_data=False)
    domains = {n.domain for n in model.graph.node}
    assert domains <= {"", "com.microsoft"}, domains
    known = {s.name for s in ort.capi.onnxruntime_pybind11_state.get_all_operator_schema()}
    ops = sorted({n.op_type for n in model.graph.node})
    unknown = [op for op in ops if op not in known]
    assert not unknown, f"ops unknown to onnxruntime {ort.__version__}: {unknown}"

    ids = np.array([[int(t) for t in ids_text.split(",")]], dtype=np.int64)
    sess = session(path, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    full, _ = run(sess, ids, empty_past(sess, 1))

    steps, past = [], empty_past(sess, 1)
    for t in range(ids.shape[1]):
        logits, past = run(sess, ids[:, t : t + 1], past)
        steps.append(logits[:, 0, :])
    stepwise = np.stack(steps, axis=1)

    batched, _ = run(sess, np.repeat(ids, 2, axis=0), empty_past(sess, 2))
    batch_diff = float(np.abs(batched - full).max())
    assert batch_diff <= 1e-4 * max(1.0, float(np.abs(full).max())), f"batch rows differ by {batch_diff}"

    # (d) left padding: two masked pad tokens before the prompt change nothing for the prompt's tokens.
    padded_ids = np.concatenate([np.zeros((1, 2), dtype=np.int64), ids], axis=1)
    padded_mask = np.concatenate([np.zeros((1, 2), dtype=np.int64), np.ones_like(ids)], axis=1)
    padded, _ = run(sess, padded_ids, empty_past(sess, 1), padded_mask)
    pad_diff = float(np.abs(padded[:, 2:] - full).max())
    assert pad_diff <= 1e-4 * max(1.0, float(np.abs(full).max())), f"left-padded logits differ by {pad_diff}"

    optimized, _ = run(session(path, ort.GraphOptimizationLevel.ORT_ENABLE_ALL), ids, empty_past(sess, 1))

    with open(out_path, "wb") as f:
        f.write(full[0].astype("<f4").tobytes())
        f.write(stepwise[0].astype("<f4").tobytes())
    print(json.dumps({
        "onnxruntime": ort.__version__,
        "onnx": onnx.__version__,
        "ops": ops,
        "batch2_max_diff": batch_diff,
        "left_pad_max_diff": pad_diff,
        "enable_all_max_diff": float(np.abs(optimized - full).max()),
    }))


if __name__ == "__main__":
    main()
