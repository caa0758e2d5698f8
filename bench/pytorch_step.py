"""PyTorch's training step on SmolLM2-135M, the peer dtrain's `bench step` is compared with.

    python bench/pytorch_step.py --method lora|full [--steps 5] [--warmup 1] [--threads 2] [--lora-dropout P]

transformers' LlamaForCausalLM with SmolLM2-135M-Instruct's shapes (weights drawn at random: the
time of a step does not depend on their values), float32, eager PyTorch with its default
settings (scaled-dot-product attention, its own oneDNN/MKL kernels), train mode. LoRA is PEFT's,
r 8, alpha 16, dropout --lora-dropout (default 0.05, dtrain's run-config default), on the seven
projections, as `dtrain bench step --method lora`. A step
is zero_grad, forward with labels, backward and torch.optim.AdamW, on 4 x 256 random tokens.
Prints one JSON line. Peak RSS is the high-water mark over the steps alone (the mark is reset
after setup, as dtrain does).
"""
import argparse
import json
import os
import time


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", choices=["lora", "full"], default="lora")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--lora-dropout", type=float, default=0.05)
    args = ap.parse_args()

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # SmolLM2-135M-Instruct's config.json.
    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=8192,
                         rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True, hidden_act="silu",
                         attention_bias=False, mlp_bias=False)
    model = LlamaForCausalLM(config).float()
    if args.method == "lora":
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(
            r=8, lora_alpha=16, lora_dropout=args.lora_dropout, bias="none", task_type="CAUSAL_LM",
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    g = torch.Generator().manual_seed(42)
    ids = torch.randint(0, config.vocab_size - 1, (args.batch, args.seq_len), generator=g)

    times, losses = [], []
    reset_peak_rss()
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        dt = time.perf_counter() - t0
        losses.append(loss.detach().item())
        if i >= args.warmup:
            times.append(dt)
    per_step = sum(times) / len(times)
    print(json.dumps({
        "peer": f"pytorch {torch.__version__}", "method": args.method, "lora_dropout": args.lora_dropout, "threads": args.threads,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "steps": args.steps,
        "seconds_per_step": per_step, "seconds_per_step_min": min(times),
        "tokens_per_s": args.batch * args.seq_len / per_step, "peak_rss_bytes": peak_rss_bytes(),
        "losses": losses,
    }))


if __name__ == "__main__":
    main()
