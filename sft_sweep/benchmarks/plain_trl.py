"""The baseline for the overhead benchmark: the same training as `python -m sft_sweep`
(tiny model, sample data, LoRA, same SFTConfig values and seed) written as a plain TRL script.

    python -m sft_sweep.benchmarks.plain_trl OUTPUT_DIR

Both train 200 unpacked steps of 8 rows (the overhead benchmark passes sft-sweep the same schedule). The only
difference on purpose: it trains on every token (TRL's own assistant_only_loss needs {% generation %} markers the
tiny template lacks); the tokens computed per step are the same.
"""

import json
import sys

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from sft_sweep.config import asset_path


def main(out: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(asset_path("tiny_tokenizer"))
    config = AutoConfig.for_model("qwen3", vocab_size=len(tokenizer), hidden_size=64, intermediate_size=192,
                                  num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                                  tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id, use_cache=False)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    rows = [json.loads(line) for line in open(asset_path("sample/chat.jsonl"), encoding="utf-8")]
    # Render with the chat template here: Arrow would merge the tool-call argument dicts across rows.
    texts = [tokenizer.apply_chat_template(r["messages"], tools=r.get("tools"), tokenize=False) for r in rows]
    data = Dataset.from_dict({"text": texts}).train_test_split(test_size=240, seed=42)
    trainer = SFTTrainer(
        model=model,
        processing_class=tokenizer,
        train_dataset=data["train"],
        eval_dataset=data["test"],
        peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                               modules_to_save=["embed_tokens", "lm_head"], task_type="CAUSAL_LM"),
        args=SFTConfig(output_dir=out, learning_rate=5e-3, weight_decay=0.01, lr_scheduler_type="cosine",
                       warmup_steps=0.03, max_steps=200, per_device_train_batch_size=8, per_device_eval_batch_size=16,
                       max_length=1024, eval_strategy="steps", eval_steps=50, eval_on_start=True, logging_steps=10,
                       save_steps=500, save_total_limit=2, seed=42, bf16=False, report_to=[]),
    )
    trainer.train()
    trainer.save_model(out)


if __name__ == "__main__":
    main(sys.argv[1])
