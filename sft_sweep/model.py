"""Model side of a run: tokenizer, base model, LoRA and 4-bit quantization configs.

Every function takes the composed config's plain-Python pieces (`cfg.model`, `cfg.lora`)
and builds the HF / PEFT object they describe; nothing here downloads unless a preset
names a hub id that is not cached (and the hub is reachable: when it is not, loading goes
straight to the local cache instead of retrying for a minute).
"""

import functools
import importlib.util
import os
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from sft_sweep import dist
from sft_sweep.errors import UserError

# The model group's keys (conf/model/hub_defaults.yaml): sft-sweep's own, not one class's arguments.
KEYS = {"name_or_path", "tokenizer", "chat_template", "pad_token", "config", "init_seed", "dtype",
        "attn_implementation", "use_cache", "train_in_full"}


def bf16_supported() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def resolve_dtype(name: str) -> torch.dtype:
    """`auto` means bfloat16 where the hardware has it, float32 otherwise (CPU)."""
    if name == "auto":
        return torch.bfloat16 if bf16_supported() else torch.float32
    return getattr(torch, name)


def resolve_attn_implementation(name: str) -> str:
    if name == "auto":
        has_flash = importlib.util.find_spec("flash_attn") is not None
        return "flash_attention_2" if has_flash and torch.cuda.is_available() else "sdpa"
    return name


@functools.cache
def hub_unreachable() -> bool:
    """HF_HUB_OFFLINE is set, or the hub's host does not answer within 3 s."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return True
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=3).close()
        return False
    except OSError:
        return True


def _hub_error(what: str, name: str, exc: Exception) -> UserError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    where = "the local Hugging Face cache (the hub is unreachable)" if hub_unreachable() else \
        "the Hugging Face hub or its local cache"
    return UserError(f"cannot load {what} {name!r} from {where} ({reason}); "
                     f"set model.name_or_path to a local directory")


def _is_local(name: str) -> bool:
    return Path(name).exists()


def build_tokenizer(model_cfg: dict):
    name = model_cfg["tokenizer"] or model_cfg["name_or_path"]
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=not _is_local(name) and hub_unreachable())
    except OSError as exc:
        raise _hub_error("tokenizer", name, exc) from None
    if model_cfg.get("chat_template"):
        tokenizer.chat_template = Path(model_cfg["chat_template"]).read_text(encoding="utf-8")
    if not tokenizer.chat_template:
        raise UserError(f"tokenizer {name!r} has no chat template; set model.chat_template to a .jinja file")
    if tokenizer.pad_token is None:
        # Padding never reaches the loss (labels come from the assistant mask), so eos is a safe fallback.
        tokenizer.pad_token = model_cfg.get("pad_token") or tokenizer.eos_token
    return tokenizer


def base_model_path(model_cfg: dict, tokenizer, out_dir: Path) -> str:
    """What to load the base model from: the preset's hub id / path, or -- for a model built from
    `model.config` (the tiny model) -- its seeded random init, saved to `out_dir` (the run dir's
    base_model/) so the adapter's base travels with the run. Every rank builds the same weights;
    only rank 0 keeps them in the run dir."""
    if not model_cfg["config"]:
        return model_cfg["name_or_path"]
    target = out_dir if dist.is_main_process() else Path(tempfile.mkdtemp(prefix="sft_sweep_base_"))
    return str(materialize_random_init(model_cfg, tokenizer, target))


def materialize_random_init(model_cfg: dict, tokenizer, out_dir: Path) -> Path:
    """Build a model from `model.config` (random init, `init_seed`) and save it with the tokenizer.

    Saving first gives every model the same from_pretrained path (so 4-bit quantization works
    on it too) and leaves the run dir self-contained: the adapter's base model is right there.
    """
    config = AutoConfig.for_model(**model_cfg["config"])
    if config.vocab_size < len(tokenizer):
        raise UserError(f"model.config.vocab_size={config.vocab_size} is smaller than the tokenizer ({len(tokenizer)})")
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.bos_token_id = tokenizer.bos_token_id
    with torch.random.fork_rng():
        torch.manual_seed(model_cfg["init_seed"])
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_quantization_config(lora_cfg: dict | None) -> BitsAndBytesConfig | None:
    quant = (lora_cfg or {}).get("quantization")
    if not quant:
        return None
    quant = dict(quant)
    if isinstance(quant.get("bnb_4bit_compute_dtype"), str):
        quant["bnb_4bit_compute_dtype"] = getattr(torch, quant["bnb_4bit_compute_dtype"])
    return BitsAndBytesConfig(**quant)


NOT_LORA_CONFIG = ("quantization", "autocast_adapter_dtype")  # keys of the lora group that feed other classes


def build_lora_config(lora_cfg: dict | None):
    """PEFT's LoraConfig for the lora group, or None (full fine-tuning)."""
    if not lora_cfg:
        return None  # full fine-tuning
    from peft import LoraConfig  # (see add_lora)

    return LoraConfig(**{k: v for k, v in lora_cfg.items() if k not in NOT_LORA_CONFIG})


def add_lora(model, lora_cfg: dict | None):
    """The model with its LoRA adapter (PEFT's get_peft_model), or the model itself for full fine-tuning.
    `lora.autocast_adapter_dtype: true` (PEFT's default) keeps the adapter in float32 under a bf16 base,
    so every adapted layer casts its input and output; false keeps it in the base model's dtype."""
    if not lora_cfg:
        return model
    # PEFT is imported where it is used: with bitsandbytes it takes ~3 s to import, and a sweep's own process,
    # which builds the tokenizer (data.WarmDataCache) and launches trials elsewhere, never needs it.
    from peft import get_peft_model

    return get_peft_model(model, build_lora_config(lora_cfg),
                          autocast_adapter_dtype=lora_cfg.get("autocast_adapter_dtype", True))


def build_model(model_cfg: dict, lora_cfg: dict | None, path: str):
    """Load the base model from `path` (hub id or local dir), quantized when lora=qlora."""
    quantization = build_quantization_config(lora_cfg)
    kwargs = dict(
        dtype=resolve_dtype(model_cfg["dtype"]),
        attn_implementation=resolve_attn_implementation(model_cfg["attn_implementation"]),
        use_cache=model_cfg["use_cache"],
    )
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": 0} if torch.cuda.is_available() else {"": "cpu"}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=not _is_local(path) and hub_unreachable(),
                                                     **kwargs)
    except OSError as exc:
        raise _hub_error("model", path, exc) from None
    if quantization is not None:
        # Not peft.prepare_model_for_kbit_training: without gradient checkpointing all it adds to what
        # PEFT's wrapping does (freezing the base) is an fp32 copy of every non-4-bit weight -- for
        # Qwen3-4B the 389M-parameter tied embedding/head -- which costs memory and speed and buys
        # nothing under bf16 compute. (Activation checkpointing's input grads are TRL's to enable.)
        keep_cpu_4bit_weights_trainable(model)
    return model


def keep_cpu_4bit_weights_trainable(model) -> None:
    """bitsandbytes (0.50) repacks CPU 4-bit weights for inference on the first eval-mode forward
    and never unpacks them; the repacked matmul has no autograd, so after the first evaluation
    gradients would stop flowing through the base layers. Training never wants that fast path."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
