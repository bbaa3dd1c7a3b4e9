"""Data for a run: every common SFT format in, validated, deduplicated, mixed, split, tokenized.

    sources.py   read .json/.jsonl/.parquet/.csv, save_to_disk folders, hub ids
    formats.py   messages / alpaca / sharegpt / prompt-completion / text / field mapping -> one schema
    validate.py  known roles, user+assistant turns, tool-call JSON, UTF-8, control chars, answer length
    mixing.py    exact dedup, weighted concat / interleave / resample, split
    prepare.py   the pipeline, exported and cached by a fingerprint of inputs and config
    tokenize.py  token ids + assistant masks, cached by data/tokenizer/template/max_length
    __main__.py  `python -m sft_sweep.data check|prepare|inspect`
"""

import logging
from dataclasses import dataclass

from datasets import Dataset
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sft_sweep.data.prepare import fingerprint, prepare, problem_lines
from sft_sweep.data.tokenize import cached_tokenize, masking_config

log = logging.getLogger(__name__)


@dataclass
class RunData:
    train: Dataset  # token ids + assistant masks
    eval: Dataset | None  # None: no evaluation set (data.val_ratio=0 data.min_val_size=0)
    validation_rows: list[dict]  # the eval set as chat rows, for answer-level evaluation
    fingerprint: str  # of the tokenized data (its cache key): a checkpoint resumes only on the same data


class WarmDataCache(Callback):
    """Hydra callback of the sweep presets (hparams_search/*.yaml): the data prepared and tokenized once, before the
    trials start (they then all hit the cache instead of racing to build it in parallel processes)."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from sft_sweep.config import plain
        from sft_sweep.model import build_tokenizer

        c = {group: plain(config[group]) for group in ("data", "model", "trainer")}
        build_datasets(c["data"], build_tokenizer(c["model"]), c["trainer"]["max_length"], c["trainer"]["packing"])


def build_datasets(data_cfg: dict, tokenizer, max_length: int, packing: bool = False) -> RunData:
    """Tokenized train/eval data for a run, reusing every cache that matches."""
    fp = fingerprint(data_cfg)
    prepared = None

    def rows():
        nonlocal prepared
        prepared = prepare(data_cfg, fp)
        return prepared[:2]

    train, evaluation, folder = cached_tokenize(fp, rows, tokenizer, data_cfg["cache_dir"], max_length, packing,
                                                masking_config(data_cfg))
    log.info("data: %d train / %d eval sequences%s", len(train), len(evaluation),
             "" if len(evaluation) else " (no evaluation: every row trains)")
    _, validation_rows, report, prepared_dir = prepared or prepare(data_cfg, fp)  # read back from its cache
    for line in problem_lines(report.get("problems") or {}, "data: skipped"):  # every run says what it skipped
        log.warning("%s (all in %s/report.json)", line, prepared_dir)
    return RunData(train, evaluation if len(evaluation) else None, validation_rows, folder.name)
