"""Evaluation of a model on the validation rows, and the probe questions before/after training.

    perplexity   exp(mean NLL over the trained (assistant) positions of the eval set)
    answers      greedy answers to each validation conversation's last assistant turn, scored by
                 eval_metrics.summarize (JSON validity and keys, exact match overall and per task
                 kind, usability, answer diversity)
    probes       the configured questions, answered by the model (for the before/after table)
    forgetting   perplexity on general chat (eval.general_path) before and after training; the
                 difference is the forgetting delta (> 0: the model got worse at general chat)
"""

import json
import logging
import math
import re

import torch

from sft_sweep.eval_metrics import summarize
from sft_sweep.generation import generate
from sft_sweep.run_dir import RunDir

log = logging.getLogger("sft_sweep")


@torch.no_grad()
def perplexity(model, dataset, collator, batch_size: int = 16) -> float:
    """Token-weighted over all trained positions (the Trainer's eval_loss averages batch means)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for start in range(0, len(dataset), batch_size):
            rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            batch = collator([{"input_ids": r["input_ids"],
                               "labels": r.get("labels") or [t if m else -100 for t, m in
                                                             zip(r["input_ids"], r["assistant_masks"])]}
                              for r in rows])
            batch = {k: v.to(model.device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
            labels = batch.pop("labels")
            logits = model(**batch).logits.float()
            targets = labels[:, 1:]
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), targets, ignore_index=-100,
                                                    reduction="sum")
            total += nll.item()
            count += int((targets != -100).sum())
    finally:
        model.train(was_training)
    return math.exp(total / count) if count else float("nan")


def general_dataset(tokenizer, path: str, max_length: int):
    """A general chat file (any format the data group reads), tokenized with every assistant turn scored."""
    from sft_sweep.data.formats import RowError, normalize
    from sft_sweep.data.sources import read_source
    from sft_sweep.data.tokenize import tokenize_rows
    from sft_sweep.errors import UserError

    rows = []
    for raw, where in read_source(path):
        try:
            rows.append(normalize(raw, "auto"))
        except RowError as exc:
            raise UserError(f"eval.general_path: {where}: {exc}") from None
    masking = {"train_on": "all_assistant", "train_tool_calls": True, "thinking": True}
    return tokenize_rows(rows, tokenizer, max_length, masking, f"eval.general_path {path}")


def general_perplexity(model, tokenizer, path: str, max_length: int, batch_size: int, dataset=None) -> float:
    """Perplexity over the assistant turns of a general chat file (`dataset`: that file, already tokenized)."""
    from sft_sweep.packing import BlockDiagonalCollator

    dataset = dataset if dataset is not None else general_dataset(tokenizer, path, max_length)
    return perplexity(model, dataset, BlockDiagonalCollator(tokenizer.pad_token_id), batch_size)


def answer_prompts(rows: list[dict], max_samples: int) -> list[dict]:
    """Each chat row -> its conversation up to the last assistant turn, and that turn's text."""
    out = []
    for row in rows:
        messages = row.get("messages")
        if not messages:
            continue
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        if messages[last].get("tool_calls") or not messages[last]["content"].strip():
            continue
        out.append({"id": row.get("id"), "tags": row.get("tags") or [], "messages": messages[:last],
                    "tools": row.get("tools"), "reference": messages[last]["content"]})
        if len(out) == max_samples:
            break
    return out


def answer_eval(model, tokenizer, rows: list[dict], cfg: dict) -> tuple[dict, list[dict]]:
    prompts = answer_prompts(rows, cfg["max_samples"])
    generated = generate(model, tokenizer, [p["messages"] for p in prompts], cfg["max_new_tokens"], cfg["batch_size"],
                         cfg["enable_thinking"], tools=[p["tools"] for p in prompts])
    samples = [{"id": p["id"], "kind": ",".join(p["tags"]), "tags": p["tags"], "prompt": p["messages"][-1]["content"],
                "reference": p["reference"], **g} for p, g in zip(prompts, generated)]
    return summarize(samples), samples


def probe_answers(model, tokenizer, cfg: dict) -> list[str]:
    conversations = [[{"role": "user", "content": q}] if isinstance(q, str) else q for q in cfg["probes"]]
    return [g["prediction"] for g in generate(model, tokenizer, conversations, cfg["max_new_tokens"],
                                               cfg["batch_size"], cfg["enable_thinking"])]


def probe_question(probe) -> str:
    """A probe is a question, or a conversation ending in the user's turn (shown as its turns)."""
    if isinstance(probe, str):
        return probe
    return " / ".join(m["content"] for m in probe)


def probes_markdown(questions: list, before: list[str] | None, after: list[str]) -> str:
    def cell(text):  # one table cell: line breaks as <br>, other control characters dropped
        text = re.sub(r"\r\n?|\n", "<br>", text.replace("|", "\\|"))
        return re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", text) or "(empty)"

    lines = ["| probe | before training | after training |", "|---|---|---|"]
    for i, q in enumerate(questions):
        lines.append(f"| {cell(probe_question(q))} | {cell(before[i]) if before else '-'} | {cell(after[i])} |")
    return "\n".join(lines) + "\n"


def write_samples(path, samples: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for sample in samples:
            f.write(json.dumps(sample, ensure_ascii=False) + "\n")


class Evaluation:
    """The `eval` group at the end of a run (and before it, for the before/after comparison)."""

    def __init__(self, cfg: dict, trainer, validation_rows: list[dict]):
        self.cfg, self.trainer, self.rows = cfg, trainer, validation_rows
        self.before_scores = self.before_probes = self.samples = self.probes = self.general_before = None
        self.general_data = None  # the general chat file, tokenized once for both measurements

    def general(self) -> float | None:
        if not self.cfg.get("general_path"):
            return None
        tokenizer, max_length = self.trainer.processing_class, self.trainer.args.max_length
        if self.general_data is None:
            self.general_data = general_dataset(tokenizer, self.cfg["general_path"], max_length)
        return general_perplexity(self.trainer.model, tokenizer, self.cfg["general_path"], max_length,
                                  self.cfg["batch_size"], self.general_data)

    def before(self) -> None:
        if self.cfg["enabled"]:
            self.general_before = self.general()  # the forgetting check's baseline, even without before_training
        if self.cfg["enabled"] and self.cfg["before_training"]:
            model, tok = self.trainer.model, self.trainer.processing_class
            self.before_scores, _ = answer_eval(model, tok, self.rows, self.cfg)
            self.before_probes = probe_answers(model, tok, self.cfg)

    def after(self, run_dir: RunDir) -> dict:
        if not self.cfg["enabled"]:
            return {}
        model, tok = self.trainer.model, self.trainer.processing_class
        scores, self.samples = answer_eval(model, tok, self.rows, self.cfg)
        self.probes = probe_answers(model, tok, self.cfg)
        table = probes_markdown(self.cfg["probes"], self.before_probes, self.probes)
        run_dir.probes.write_text(table, encoding="utf-8")
        write_samples(run_dir.eval_samples, self.samples)
        log.info("probes before / after training:\n%s", table)
        if scores["collapsed_answers"]:
            log.warning("evaluation: near-constant answers (%d distinct answers to %d distinct references; "
                        "%.0f%% are %r)", scores["distinct_answers"], scores["distinct_references"],
                        100 * scores["top_answer_share"], scores["top_answer"])
        forgetting = {}
        if self.general_before is not None:
            after = self.general()
            forgetting = {"general_perplexity_before": self.general_before, "general_perplexity_after": after,
                          "forgetting_delta": after - self.general_before}
            log.info("forgetting check: general-chat perplexity %.3f -> %.3f (delta %+.3f)", self.general_before,
                     after, after - self.general_before)
        return {"eval_perplexity": perplexity(model, self.trainer.eval_dataset, self.trainer.data_collator,
                                              self.cfg["batch_size"]),
                **forgetting,
                **{f"eval_{k}": v for k, v in scores.items()},
                "before_training": self.before_scores,
                "probes": [dict(zip(("probe", "before", "after"), row)) for row in self.probe_table()]}

    def probe_table(self) -> list[list[str]]:
        before = self.before_probes or ["-"] * len(self.probes)
        return [[probe_question(q), before[i], self.probes[i]] for i, q in enumerate(self.cfg["probes"])]
