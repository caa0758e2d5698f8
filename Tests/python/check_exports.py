#!/usr/bin/env python3
"""Loads dtrain's exports in the tools users deploy with and compares them with dtrain's numbers.

    python check_exports.py SPEC.json

SPEC.json (written by ExportTests):
  base_gguf   the base model dtrain fine-tuned (transformers dequantises it to float32)
  hf_dir      `dtrain export --format hf` output: transformers' from_pretrained loads it
  peft_dir    `dtrain export --format peft` output: PEFT applies it to the base
  gguf        `dtrain export --format gguf` output (F32): llama.cpp (llama-cpp-python) loads it
  sequences   [{"ids": [...], "losses": [...]}]: dtrain's per-token losses of the tuned model
              (natural-log cross-entropy of token t+1 given tokens 0..t)
  greedy      [{"prompt": [...], "ids": [...]}]: dtrain's greedy continuation of each prompt
Prints one JSON object with the largest loss differences and the greedy matches; exits 1 when
a loss differs by more than 2e-3 or a greedy continuation differs.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

TOLERANCE = 2e-3


def token_losses(model, ids):
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    return F.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="none").tolist()


def worst(model, sequences):
    diff = 0.0
    for s in sequences:
        got = token_losses(model, s["ids"])
        diff = max(diff, max(abs(a - b) for a, b in zip(got, s["losses"])))
    return diff


def llama_cpp_greedy(path, prompts):
    from llama_cpp import Llama

    llm = Llama(model_path=path, n_ctx=512, n_threads=2, logits_all=True, verbose=False)
    out = []
    for p in prompts:
        llm.reset()
        llm.eval(p["prompt"])
        ids = []
        for _ in range(len(p["ids"])):
            logits = llm.scores[llm.n_tokens - 1]
            token = int(logits.argmax())
            ids.append(token)
            if token == llm.token_eos():
                break
            llm.eval([token])
        out.append(ids)
    return out


def main():
    spec = json.load(open(sys.argv[1]))
    report = {}
    hf = AutoModelForCausalLM.from_pretrained(spec["hf_dir"], dtype=torch.float32)
    hf.eval()
    report["hf_max_loss_diff"] = worst(hf, spec["sequences"])
    del hf

    from peft import PeftModel

    directory, name = os.path.split(os.path.abspath(spec["base_gguf"]))
    base = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    tuned = PeftModel.from_pretrained(base, spec["peft_dir"])
    tuned.eval()
    report["peft_max_loss_diff"] = worst(tuned, spec["sequences"])
    del tuned, base

    greedy = llama_cpp_greedy(spec["gguf"], spec["greedy"])
    report["llama_cpp_greedy"] = greedy
    report["llama_cpp_matches"] = [g == p["ids"] for g, p in zip(greedy, spec["greedy"])]
    report["ok"] = (report["hf_max_loss_diff"] <= TOLERANCE and report["peft_max_loss_diff"] <= TOLERANCE
                    and all(report["llama_cpp_matches"]))
    print(json.dumps(report))
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
