"""Every metric a run records, named once: the keys of metrics.json, evaluation.json and the W&B summary,
which the console and the reports read from here.

Final values are named as the Trainer names its evaluation metrics, `eval_<what>`; the same measurement
of the base model before training is `before_<that name>` (`before(EXACT_MATCH)` is
"before_eval_exact_match"). Each scored answer in eval_samples.jsonl carries its own scores
(SAMPLE_SCORES), computed once when it was generated.
"""

from sft_sweep.status import Status

# --- training (recipe.training_metrics) --------------------------------------------------------------
TRAIN_LOSS_MEAN = "train_loss_mean"  # the trainer's mean over the run's steps
TRAIN_LOSS_LAST = "train_loss_last"  # the last logged value
GLOBAL_STEP = "global_step"
TRAIN_RUNTIME = "train_runtime_s"
TRAIN_TOKENS = "train_tokens"
TOKENS_PER_S = "train_tokens_per_s"
PEAK_MEMORY = "peak_memory"
TRAINABLE_PARAMS = "trainable_params"
DIVERGED = Status.DIVERGED.value  # true: the monitor stopped the run (its status then says so too)
PRUNED_AT_STEP = "pruned_at_step"
MONITOR = "monitor"
OOM = "oom"
RANDOM_INIT = "base_random_init"  # the base model was built from a config (the tiny model), not pretrained

# --- evaluation (evaluation.py) ------------------------------------------------------------------------
EVAL_LOSS = "eval_loss"  # the Trainer's (mean of batch means over the eval set)
FIRST_EVAL_LOSS = "first_eval_loss"  # its first evaluation (step 0 with eval_on_start)
PERPLEXITY = "eval_perplexity"  # exp(token-weighted mean NLL over trained positions)
GENERAL_PERPLEXITY = "eval_general_perplexity"  # the same on general chat (eval.general_path)
FORGETTING_DELTA = "forgetting_delta"  # GENERAL_PERPLEXITY - before(GENERAL_PERPLEXITY)
PROBES = "probes"  # [{probe, before, after}]
# answer-level, over generated answers (eval_metrics.summarize)
JSON_VALIDITY = "eval_json_validity"
JSON_KEY_MATCH = "eval_json_key_match"
EXACT_MATCH = "eval_exact_match"
EXACT_MATCH_BY_TAG = "eval_exact_match_by_tag"  # {task kind: exact match}
USABILITY = "eval_usability"
ANSWER_DIVERSITY = "eval_answer_diversity"
DISTINCT_ANSWERS = "eval_distinct_answers"
DISTINCT_REFERENCES = "eval_distinct_references"
TOP_ANSWER = "eval_top_answer"
TOP_ANSWER_SHARE = "eval_top_answer_share"
COLLAPSED_ANSWERS = "eval_collapsed_answers"
N_SAMPLES = "eval_n_samples"
N_JSON = "eval_n_json"
N_EXACT = "eval_n_exact"
ANSWER_SCORES = (JSON_VALIDITY, JSON_KEY_MATCH, EXACT_MATCH, EXACT_MATCH_BY_TAG, USABILITY, ANSWER_DIVERSITY,
                 DISTINCT_ANSWERS, DISTINCT_REFERENCES, TOP_ANSWER, TOP_ANSWER_SHARE, COLLAPSED_ANSWERS, N_SAMPLES,
                 N_JSON, N_EXACT)

# --- one scored answer (eval_samples.jsonl) -----------------------------------------------------------
EXACT = "exact"  # null where the reference is not one exact_match scores
JSON_VALID = "json_valid"  # null where the reference is not JSON
JSON_KEYS = "json_keys"
USABLE = "usable"
SAMPLE_SCORES = (EXACT, JSON_VALID, JSON_KEYS, USABLE)


def objectives(optimized_metric) -> list[str]:
    """The names `optimized_metric` names: one, or one per objective of a multi-objective sweep."""
    return [optimized_metric] if isinstance(optimized_metric, str) else list(optimized_metric or [])


def before(name: str) -> str:
    """The name of a measurement of the base model, before training."""
    return "before_" + name


BENCH_PREFIX = "bench_"  # a standard benchmark's score (bench.py): bench_<task>_<metric>


def bench(task: str, metric: str) -> str:
    """The name of lm-eval task `task`'s `metric` (its filter appended where it is not `none`)."""
    return BENCH_PREFIX + "_".join(part.replace("-", "_").replace(" ", "_") for part in (task, metric))
