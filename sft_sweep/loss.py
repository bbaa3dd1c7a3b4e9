"""Cross-entropy on the trained positions only, without the full [batch, length, vocab] logits.

An SFT batch trains on a fraction of its positions (the answers; never the prompt, the padding or a
sample's last token), and on a model whose output layer dominates -- every Qwen3 up to 4B, with its
151,669-token vocabulary -- projecting every position onto the vocabulary is most of a step's work and
of its memory. Here the model runs as usual up to its last hidden states (through every wrapper: PEFT,
DDP, accelerate's autocast; `logits_to_keep=1` leaves its own head one position per row), the hidden
states are gathered where the next token's label is not -100, and `LinearCrossEntropy` projects them onto
the vocabulary in chunks of at most CHUNK_ELEMENTS logits. Each chunk's gradient is computed as the chunk
is scored (Liger's fused-linear-cross-entropy way): no chunk is recomputed in the backward pass, and no
more than one chunk of logits exists at a time. The loss and gradients are the model's own cross-entropy's
(summed over trained positions, divided by `num_items_in_batch` as transformers does), up to float
rounding.

Models whose head is not a plain linear layer (logit soft-capping, logit scaling) or that need the full
forward (MoE router losses) take the model's own loss instead: `supports_trained_positions_loss`.
"""

import torch

CHUNK_ELEMENTS = 1 << 25  # logits per chunk: 128 MiB in float32, whatever the vocabulary
IGNORE = -100
_SCALED_HEAD = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


def unwrap(model):
    """The transformers model under PEFT / DDP wrappers."""
    while hasattr(model, "module"):  # DDP, DataParallel
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def supports_trained_positions_loss(model) -> bool:
    """A causal LM whose logits are a plain linear projection of its last hidden states, in the model's dtype (TRL
    casts a quantized model's trainable weights -- a head trained in full among them -- to bfloat16: its own
    forward could not run that head on float32 hidden states, only TRL's loss, which casts)."""
    inner = unwrap(model)
    config = inner.config.get_text_config() if hasattr(inner.config, "get_text_config") else inner.config
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    return (head is not None and isinstance(getattr(head, "weight", None), torch.Tensor)
            and getattr(head, "bias", None) is None and head.weight.dtype == inner.dtype
            and not any(getattr(config, key, None) for key in _SCALED_HEAD)
            and not getattr(config, "output_router_logits", False))


def trained_hidden_states(model, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden states [N, H] of the positions whose next token is trained, those next tokens [N])."""
    labels = inputs["labels"]
    forward = {k: v for k, v in inputs.items() if k != "labels"}
    outputs = model(**forward, use_cache=False, output_hidden_states=-1, logits_to_keep=1)
    hidden = outputs.hidden_states[-1][:, :-1]
    targets = labels[:, 1:].to(hidden.device)
    trained = targets != IGNORE
    return hidden[trained], targets[trained]


def nll_sum(model, inputs: dict) -> tuple[torch.Tensor, int]:
    """(summed negative log-likelihood of the trained tokens, their count); differentiable when grad is on."""
    hidden, targets = trained_hidden_states(model, inputs)
    weight = unwrap(model).get_output_embeddings().weight
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return LinearCrossEntropy.apply(hidden, weight, targets), targets.numel()
    return sum((nll for nll, _ in chunks(hidden, weight, targets)), torch.zeros((), device=hidden.device)), \
        targets.numel()


def chunks(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor):
    """For each chunk of positions: (summed NLL, its float32 logits minus their log-sum-exp, i.e. log-probs).
    The projection runs in the head's dtype, as the model's own head does (a QLoRA model's may differ from
    its hidden states'); the softmax in float32."""
    chunk = max(1, CHUNK_ELEMENTS // weight.shape[0])
    for start in range(0, hidden.shape[0], chunk):
        log_probs = torch.log_softmax((hidden[start:start + chunk].to(weight.dtype) @ weight.t()).float(), dim=-1)
        t = targets[start:start + chunk]
        yield -log_probs.gather(1, t[:, None]).sum(), log_probs


class LinearCrossEntropy(torch.autograd.Function):
    """sum_i -log softmax(hidden_i @ weight.T)[target_i], chunked over positions, float32 softmax."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        total, start = torch.zeros((), dtype=torch.float32, device=hidden.device), 0
        for nll, log_probs in chunks(hidden, weight, targets):
            n = log_probs.shape[0]
            total += nll
            # d(sum nll)/d logits = softmax - one_hot(target), made in place of the log-probs
            grad = log_probs.exp_()
            grad[torch.arange(n, device=grad.device), targets[start:start + n]] -= 1
            grad = grad.to(weight.dtype)
            if need_hidden:
                grad_hidden[start:start + n] = (grad @ weight).to(hidden.dtype)
            if need_weight:
                grad_weight.addmm_(grad.t().float(), hidden[start:start + n].float())
            start += n
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        return (None if grad_hidden is None else grad_hidden * grad_output.to(grad_hidden.dtype),
                None if grad_weight is None else (grad_weight * grad_output).to(ctx.weight_dtype), None)
