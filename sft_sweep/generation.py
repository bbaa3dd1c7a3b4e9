"""Batched greedy generation with the training chat template (left padding, thinking off by default): the
evaluation's answers, the probes and chat's replies."""

import torch

from sft_sweep.masking import end_of_turn_token


@torch.no_grad()
def generate(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 64, batch_size: int = 16,
             enable_thinking: bool = False, tools: list | None = None, template_kwargs: dict | None = None,
             streamer=None) -> list[dict]:
    """For each conversation (ending before the assistant's answer): {"prediction", "ended", "n_tokens"}.
    `ended`: the model wrote its end-of-turn token within max_new_tokens. `template_kwargs`: the chat template's
    settings (a run's own, trained.template_kwargs), else enable_thinking alone; `streamer`: transformers'
    streamer, shown each piece of a batch of one as it is generated (chat)."""

    eot_id = tokenizer.convert_tokens_to_ids(end_of_turn_token(tokenizer))
    side, tokenizer.padding_side = tokenizer.padding_side, "left"  # generation continues from the right edge
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(conversations), batch_size):
            batch = conversations[start:start + batch_size]
            tool_lists = (tools or [None] * len(conversations))[start:start + batch_size]
            prompts = [tokenizer.apply_chat_template(c, tools=t, tokenize=False, add_generation_prompt=True,
                                                     **(template_kwargs or {"enable_thinking": enable_thinking}))
                       for c, t in zip(batch, tool_lists)]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            generated = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eot_id,
                                       pad_token_id=tokenizer.pad_token_id, use_cache=True, streamer=streamer)
            for row in generated[:, enc["input_ids"].shape[1]:].tolist():
                ended = eot_id in row
                tokens = row[:row.index(eot_id)] if ended else row
                tokens = [t for t in tokens if t != tokenizer.pad_token_id]
                out.append({"prediction": tokenizer.decode(tokens, skip_special_tokens=True), "ended": ended,
                            "n_tokens": len(tokens)})
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out
