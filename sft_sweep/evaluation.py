"""Evaluation of a model on the validation rows, and the probe questions before/after training.
(Metric names: metric_names.py.)

    perplexity   exp(mean NLL over the trained (assistant) positions of the eval set), scored in chunks of
                 trained positions (loss.py): memory does not grow with the vocabulary
    answers      greedy answers to each validation conversation's last assistant turn, scored by
                 eval_metrics.summarize (JSON validity and keys, exact match overall and per task
                 kind, usability, answer diversity)
    probes       the configured questions, answered by the model (for the before/after table)
    forgetting   perplexity on general chat (eval.general_path) before and after training; the
                 difference is the forgetting delta (> 0: the model got worse at general chat)
    benchmarks   lm-evaluation-harness tasks (eval.benchmarks; bench.py), after training and, with
                 eval.benchmarks_before, before it: benchmarks.json and bench_<task>_<metric>
"""

import json
import logging
import math
import re

import torch

from sft_sweep import bench, trained
from sft_sweep import metric_names as names
from sft_sweep.eval_metrics import score, summarize
from sft_sweep.generation import generate
from sft_sweep.run_dir import RunDir, write_json

log = logging.getLogger("sft_sweep")


@torch.no_grad()
def perplexity(model, dataset, collator, batch_size: int = 16) -> float:
    """Token-weighted over all trained positions (the Trainer's eval_loss averages batch means)."""
    from sft_sweep.loss import nll_sum, supports_trained_positions_loss

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
            if supports_trained_positions_loss(model):
                nll, n = nll_sum(model, batch)
            else:  # the model's own head (soft-capped or scaled logits): full logits, one batch at a time
                labels = batch.pop("labels")[:, 1:]
                logits = model(**batch).logits[:, :-1].float()
                nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100,
                                                        reduction="sum")
                n = int((labels != -100).sum())
            total += nll.item()
            count += n
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
    """(rates, scored answers): each answer carries its own scores (metric_names.SAMPLE_SCORES)."""
    prompts = answer_prompts(rows, cfg["max_samples"])
    generated = generate(model, tokenizer, [p["messages"] for p in prompts], cfg["max_new_tokens"], cfg["batch_size"],
                         cfg["enable_thinking"], tools=[p["tools"] for p in prompts])
    # each answer with the conversation it answered (a server can be asked the same: scripts/serve_acceptance.sh)
    samples = [{"id": p["id"], "kind": ",".join(p["tags"]), "tags": p["tags"], "prompt": p["messages"][-1]["content"],
                "messages": p["messages"], **({"tools": p["tools"]} if p["tools"] else {}),
                "reference": p["reference"], **g} for p, g in zip(prompts, generated)]
    samples = [{**s, **score(s)} for s in samples]
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

    def __init__(self, cfg: dict, trainer, validation_rows: list[dict], cache_dir: str | None = None):
        self.cfg, self.trainer, self.rows = cfg, trainer, validation_rows
        self.cache_dir = cache_dir  # the data cache, where the local benchmark task lives (bench.local_tasks_dir)
        self.before_scores, self.before_probes, self.samples, self.probes = {}, None, None, None
        self.general_data = None  # the general chat file, tokenized once for both measurements
        self.before_benchmarks = None
        self.benchmark_records = None  # benchmarks.json's contents, once written

    def benchmarks(self) -> dict | None:
        """lm-eval's tasks (eval.benchmarks) on the model as it is now, or None without any."""
        if not self.cfg.get("benchmarks"):
            return None
        tokenizer = self.trainer.processing_class
        return bench.run(self.trainer.model, tokenizer, self.cfg,
                         trained.settings(self.cfg, tokenizer.chat_template or ""), self.cache_dir)

    def general(self) -> dict:
        """{GENERAL_PERPLEXITY: ...}, or {} without eval.general_path."""
        if not self.cfg.get("general_path"):
            return {}
        tokenizer, max_length = self.trainer.processing_class, self.trainer.args.max_length
        if self.general_data is None:
            self.general_data = general_dataset(tokenizer, self.cfg["general_path"], max_length)
        return {names.GENERAL_PERPLEXITY: general_perplexity(self.trainer.model, tokenizer, self.cfg["general_path"],
                                                             max_length, self.cfg["batch_size"], self.general_data)}

    def before(self) -> None:
        """The base model's scores (named `before_...`): the forgetting check's baseline always, answers and
        probes with eval.before_training."""
        if not self.cfg["enabled"] or self.trainer.eval_dataset is None:
            return
        scores = self.general()
        if self.cfg["before_training"]:
            model, tok = self.trainer.model, self.trainer.processing_class
            scores.update(answer_eval(model, tok, self.rows, self.cfg)[0])
            self.before_probes = probe_answers(model, tok, self.cfg)
        if self.cfg.get("benchmarks_before") and (found := self.benchmarks()) is not None:
            self.before_benchmarks = found
            scores.update(bench.metrics(found))
        self.before_scores = {names.before(k): v for k, v in scores.items()}

    def after(self, run_dir: RunDir) -> dict:
        if not self.cfg["enabled"] or self.trainer.eval_dataset is None:  # off, or no evaluation set
            return {}
        model, tok = self.trainer.model, self.trainer.processing_class
        scores, self.samples = answer_eval(model, tok, self.rows, self.cfg)
        self.probes = probe_answers(model, tok, self.cfg)
        table = probes_markdown(self.cfg["probes"], self.before_probes, self.probes)
        run_dir.probes.write_text(table, encoding="utf-8")
        write_samples(run_dir.eval_samples, self.samples)
        log.info("probes before / after training:\n%s", table)
        if scores[names.COLLAPSED_ANSWERS]:
            log.warning("evaluation: near-constant answers (%d distinct answers to %d distinct references; "
                        "%.0f%% are %r)", scores[names.DISTINCT_ANSWERS], scores[names.DISTINCT_REFERENCES],
                        100 * scores[names.TOP_ANSWER_SHARE], scores[names.TOP_ANSWER])
        general = self.general()
        if general and names.before(names.GENERAL_PERPLEXITY) in self.before_scores:
            before = self.before_scores[names.before(names.GENERAL_PERPLEXITY)]
            after = general[names.GENERAL_PERPLEXITY]
            general[names.FORGETTING_DELTA] = after - before
            log.info("forgetting check: general-chat perplexity %.3f -> %.3f (delta %+.3f)", before, after,
                     after - before)
        benchmarks = self.benchmarks()
        if benchmarks is not None:  # (the console summary shows each score before -> after)
            earlier = self.before_benchmarks or {}
            write_samples(run_dir.benchmark_samples, [{"when": "before", **s} for s in earlier.pop("samples", [])]
                          + [{"when": "after", **s} for s in benchmarks.pop("samples")])
            self.benchmark_records = {"after": benchmarks, "before": earlier or None}
            write_json(run_dir.benchmarks, self.benchmark_records)
            scores.update(bench.metrics(benchmarks))
        return {names.PERPLEXITY: perplexity(model, self.trainer.eval_dataset, self.trainer.data_collator,
                                             self.cfg["batch_size"]),
                **general, **scores, **self.before_scores,
                names.PROBES: [dict(zip(("probe", "before", "after"), row)) for row in self.probe_table()]}

    def probe_table(self) -> list[list[str]]:
        before = self.before_probes or ["-"] * len(self.probes)
        return [[probe_question(q), before[i], self.probes[i]] for i, q in enumerate(self.cfg["probes"])]
