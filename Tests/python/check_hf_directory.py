"""Checks a directory dtrain wrote (a run's final/ or best/) with Hugging Face's own loaders.

    python check_hf_directory.py DIR CASES.jsonl

CASES.jsonl holds what dtrain made of some inputs: {"text", "ids"} lines (dtrain tokenize, no
special tokens) and {"messages", "rendered"} lines (dtrain data render). transformers must load
the tokenizer from DIR alone and give the same ids and the same chat rendering; config.json (a full
model) must load with AutoConfig and model.safetensors must hold exactly the tensors
LlamaForCausalLM has; adapter_config.json (a LoRA adapter) must be PEFT's form. Prints one JSON
line; exits 1 on the first difference. Needs transformers, tokenizers, safetensors, numpy (no torch).
"""
import json
import os
import sys

from safetensors import safe_open
from transformers import AutoConfig, AutoTokenizer


def fail(message):
    print(json.dumps({"ok": False, "error": message}))
    sys.exit(1)


def main(directory, cases_path):
    tokenizer = AutoTokenizer.from_pretrained(directory)
    checked = {"ids": 0, "chat": 0}
    with open(cases_path, encoding="utf-8") as f:
        for line in f:
            case = json.loads(line)
            if "ids" in case:
                ids = tokenizer(case["text"], add_special_tokens=False)["input_ids"]
                if ids != case["ids"]:
                    fail(f"tokenizer: {case['text']!r}: transformers {ids}, dtrain {case['ids']}")
                checked["ids"] += 1
            else:
                text = tokenizer.apply_chat_template(case["messages"], tokenize=False)
                if text != case["rendered"]:
                    fail(f"chat template: transformers {text!r}, dtrain {case['rendered']!r}")
                checked["chat"] += 1
    config_path = os.path.join(directory, "config.json")
    adapter_path = os.path.join(directory, "adapter_config.json")
    if os.path.exists(config_path):
        config = AutoConfig.from_pretrained(directory)
        expected = {"model.embed_tokens.weight", "model.norm.weight"}
        if not config.tie_word_embeddings:
            expected.add("lm_head.weight")
        for layer in range(config.num_hidden_layers):
            prefix = f"model.layers.{layer}."
            expected |= {prefix + n + ".weight" for n in ["input_layernorm", "post_attention_layernorm",
                                                         "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                         "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]}
        with safe_open(os.path.join(directory, "model.safetensors"), framework="numpy") as st:
            names = set(st.keys())
            if names != expected:
                fail(f"model.safetensors: missing {sorted(expected - names)[:5]}, unexpected {sorted(names - expected)[:5]}")
            q = st.get_tensor("model.layers.0.self_attn.q_proj.weight")
            head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
            if list(q.shape) != [config.num_attention_heads * head_dim, config.hidden_size]:
                fail(f"q_proj shape {list(q.shape)} does not fit config.json")
        checked["model"] = config.model_type
    if os.path.exists(adapter_path):
        with open(adapter_path, encoding="utf-8") as f:
            adapter = json.load(f)
        for key in ["peft_type", "r", "lora_alpha", "target_modules", "base_model_name_or_path", "task_type"]:
            if key not in adapter:
                fail(f"adapter_config.json lacks {key}")
        with safe_open(os.path.join(directory, "adapter_model.safetensors"), framework="numpy") as st:
            for name in st.keys():
                if not name.startswith("base_model.model.model.layers.") or not name.endswith((".lora_A.weight", ".lora_B.weight")):
                    fail(f"adapter tensor {name} is not named as PEFT names LoRA weights")
                shape = st.get_tensor(name).shape
                rank_axis = 0 if "lora_A" in name else 1
                if shape[rank_axis] != adapter["r"]:
                    fail(f"adapter tensor {name} has shape {list(shape)}, r is {adapter['r']}")
        checked["adapter"] = adapter["base_model_name_or_path"]
    print(json.dumps({"ok": True, "checked": checked}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
