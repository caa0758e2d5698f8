#!/usr/bin/env python3
"""Greedy continuations of SmolLM2-135M-Instruct by transformers, for dtrain's generation tests.

An independent implementation: transformers dequantises the Q4_1 GGUF to float32 and runs its
own forward and `generate` (greedy, KV cache), on CPU. Prompts:
  - p0..p2: the token ids of ../shared/reference/smollm2/cases.safetensors (prose, a ChatML
    conversation, Python code), as that reference tokenized them;
  - c0..c2: user questions rendered with the model's chat template and its generation prompt,
    tokenized by transformers (texts without digits: transformers' GGUF tokenizer drops
    SmolLM2's digit split, see the project guide).
Writes Tests/python/generation-reference.json: for each prompt its ids and the generated ids
(up to MAX_NEW tokens, ending early at EOS, which is then the last id).

Run once, by hand, in a venv with torch, transformers and gguf:
    python Tests/python/make_generation_reference.py MODEL.gguf ../shared/reference/smollm2/cases.safetensors
"""
import json
import os
import sys

import torch
import transformers
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

MAX_NEW = 48
QUESTIONS = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain what a neural network is in one sentence.",
]


def main():
    gguf_path, cases_path = sys.argv[1], sys.argv[2]
    directory, name = os.path.dirname(os.path.abspath(gguf_path)), os.path.basename(gguf_path)
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, torch_dtype=torch.float32)
    model.eval()
    eos = tokenizer.eos_token_id
    cases = load_file(cases_path)
    prompts = [(f"p{i}", [int(x) for x in cases[f"p{i}.ids"]]) for i in range(3)]
    for i, q in enumerate(QUESTIONS):
        text = tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        prompts.append((f"c{i}", tokenizer(text, add_special_tokens=False)["input_ids"]))
    records = []
    for label, ids in prompts:
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=MAX_NEW, do_sample=False,
                                 eos_token_id=eos, pad_token_id=eos, attention_mask=torch.ones(1, len(ids), dtype=torch.long))
        generated = [int(x) for x in out[0, len(ids):]]
        if eos in generated:
            generated = generated[: generated.index(eos) + 1]
        records.append({"name": label, "prompt_ids": ids, "generated_ids": generated,
                        "generated_text": tokenizer.decode(generated)})
        print(label, len(ids), "->", len(generated), repr(tokenizer.decode(generated))[:80])
    out = {
        "generator": f"transformers {transformers.__version__}, torch {torch.__version__}, float32 CPU, greedy",
        "model": name, "eos_token_id": eos, "max_new_tokens": MAX_NEW, "questions": QUESTIONS, "prompts": records,
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "generation-reference.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
