"""Print what gguf-py (llama.cpp's own Python reader) sees in a GGUF file, as one JSON object:
tensor names, shapes (ne order) and types, and scalar metadata. Used by the Rust tests to check our writer
against an independent reader."""
import json
import sys

import gguf

reader = gguf.GGUFReader(sys.argv[1])
tensors = {t.name: {"shape": [int(d) for d in t.shape], "type": t.tensor_type.name} for t in reader.tensors}
meta = {}
for key, field in reader.fields.items():
    if not field.types or field.types[0] == gguf.GGUFValueType.ARRAY:
        meta[key] = {"array_len": len(field.data)}
    elif field.types[0] == gguf.GGUFValueType.STRING:
        meta[key] = bytes(field.parts[field.data[0]]).decode("utf-8")
    else:
        meta[key] = field.parts[field.data[0]].tolist()[0]
print(json.dumps({"tensors": tensors, "metadata": meta}))
