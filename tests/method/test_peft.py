#!/usr/bin/env python3
"""`layermap lora` against PEFT itself (run by tests/method/peft_test.sh, make test-peft).

For several budgets and both score modes, runs `layermap lora` on
tests/data/lora/stories.csv for the stories260K HF model, loads the JSON with
peft.LoraConfig(**json), applies get_peft_model to the HF Llama built by
transformers from the same directory, and checks that the modules PEFT adapted,
their ranks and their alphas are exactly the ones layermap printed as chosen.
Exits non-zero on any mismatch.
"""
import json
import os
import re
import subprocess
import sys
import tempfile

import peft
import torch
import transformers

BIN = os.environ.get("LM_BIN", "build/layermap")
MODEL = os.path.join(os.environ.get("LM_MODELS", "../shared/models"), "stories260K-hf")
MATRIX = "tests/data/lora/stories.csv"
ROW = re.compile(r"^(\d+)\s+(\S+)\s+(layers\.\d+\.\S+)\s+(\d+)\s+(\d+)$")


def chosen(out):
    """{ 'layers.L.self_attn.q_proj': r } from the table layermap prints."""
    got = {}
    for line in out.splitlines():
        m = ROW.match(line.strip())
        if m:
            got[m.group(3)] = int(m.group(4))
    return got


def adapted(model):
    """{ 'layers.L.<module>': (r, alpha) } of every LoRA layer PEFT made."""
    got = {}
    for name, mod in model.named_modules():
        if isinstance(mod, peft.tuners.lora.LoraLayer) and "default" in getattr(mod, "r", {}):
            key = name[name.index("layers."):]
            got[key] = (mod.r["default"], mod.lora_alpha["default"])
    return got


def main():
    torch.manual_seed(0)
    fails = 0
    cases = 0
    with tempfile.TemporaryDirectory() as tmp:
        for budget in ("3000", "8000", "20000", "200k"):
            for mode in ("--per-param", "--no-per-param"):
                for rank in ("4", "8"):
                    path = os.path.join(tmp, "lora.json")
                    cmd = [BIN, "lora", MATRIX, "--model", MODEL, "--budget-params", budget, "--rank", rank, mode,
                           "-o", path]
                    res = subprocess.run(cmd, capture_output=True, text=True)
                    if res.returncode:
                        print("FAIL", " ".join(cmd), res.stderr.strip())
                        fails += 1
                        continue
                    want = chosen(res.stdout)
                    cfg = json.load(open(path))
                    config = peft.LoraConfig(**cfg)
                    base = transformers.LlamaForCausalLM.from_pretrained(MODEL, torch_dtype=torch.float32)
                    model = peft.get_peft_model(base, config)
                    got = adapted(model)
                    ratio = cfg["lora_alpha"] / cfg["r"]
                    cases += 1
                    what = f"budget {budget} {mode} rank {rank}"
                    if set(got) != set(want):
                        print(f"FAIL {what}: adapted {sorted(set(got) ^ set(want))} differ")
                        fails += 1
                        continue
                    for k, r in want.items():
                        if got[k][0] != r or abs(got[k][1] - ratio * r) > 1e-9:
                            print(f"FAIL {what}: {k} r {got[k][0]} alpha {got[k][1]}, want r {r} alpha {ratio * r}")
                            fails += 1
                    params = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
                    m = re.search(r"(\d+) of (\d+) LoRA parameters", res.stdout)
                    if not m or int(m.group(1)) != params:
                        print(f"FAIL {what}: PEFT counts {params} LoRA parameters, layermap said "
                              f"{m.group(1) if m else '(nothing)'}")
                        fails += 1
                    budget_n = int(float(budget.rstrip("k")) * (1000 if budget.endswith("k") else 1))
                    if params > budget_n:
                        print(f"FAIL {what}: {params} LoRA parameters > budget {budget_n}")
                        fails += 1
                    print(f"ok {what}: {len(want)} modules, ranks {sorted(set(want.values()))}, "
                          f"{params} LoRA parameters (PEFT's count)")
    print(f"peft {peft.__version__}, transformers {transformers.__version__}, torch {torch.__version__}: "
          f"{cases} configurations, {fails} failures")
    return 1 if fails or cases == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
