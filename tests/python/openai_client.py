"""OpenAI's official Python client against `edgeforge serve` (run by crates/edgeforge-cli/tests/serve.rs).

Usage: openai_client.py BASE_URL   (e.g. http://127.0.0.1:8080/v1)
Checks the model list, a completion and a chat completion, each whole and streamed, greedy (temperature 0:
streamed text equals the whole text) and seeded (same seed, same text), and an error mapped to the
client's exception. Prints one JSON line with what it saw; exits non-zero on any mismatch.
"""
import json
import sys

import openai

base = sys.argv[1]
client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=120)

models = client.models.list()
model = models.data[0].id
out = {"model": model, "openai_version": openai.__version__}

whole = client.completions.create(model=model, prompt="The cat", max_tokens=12, temperature=0)
assert whole.object == "text_completion", whole
assert whole.usage.completion_tokens >= 1, whole.usage
text = whole.choices[0].text
streamed = "".join(c.choices[0].text for c in client.completions.create(model=model, prompt="The cat", max_tokens=12, temperature=0, stream=True))
assert streamed == text, (streamed, text)
out["completion"] = text

seeded = [client.completions.create(model=model, prompt="The cat", max_tokens=12, temperature=0.9, top_p=0.95, seed=7).choices[0].text for _ in range(2)]
assert seeded[0] == seeded[1], seeded
out["seeded"] = seeded[0]

msgs = [{"role": "user", "content": "Say hello."}]
chat = client.chat.completions.create(model=model, messages=msgs, max_tokens=12, temperature=0)
assert chat.object == "chat.completion", chat
assert chat.choices[0].message.role == "assistant"
reply = chat.choices[0].message.content
chunks = list(client.chat.completions.create(model=model, messages=msgs, max_tokens=12, temperature=0, stream=True))
assert all(c.object == "chat.completion.chunk" for c in chunks)
assert "".join(c.choices[0].delta.content or "" for c in chunks) == reply, chunks
assert chunks[-1].choices[0].finish_reason in ("stop", "length"), chunks[-1]
out["chat"] = reply

try:
    client.completions.create(model=model, prompt="x", max_tokens=4, temperature=5)
    raise AssertionError("temperature 5 was accepted")
except openai.BadRequestError as e:
    assert e.status_code == 400 and "temperature" in str(e), e
    out["error"] = e.body

print(json.dumps(out))
