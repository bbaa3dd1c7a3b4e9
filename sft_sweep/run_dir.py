"""What a run and a sweep leave on disk: every file name, the rules about them, reading them back.

    <run dir>/                    outputs/runs/<time>/ (a sweep trial: <sweep dir>/<trial number>)
      .hydra/                     Hydra's composed config, its own config, the overrides
      train.log                   the run's log, errors included
      run_manifest.json           pasteable command, resolved config, git, versions, hardware, status
      base_model/                 a random-init base built from a config (the tiny model)
      adapter/ | model/           the trained LoRA adapter | fully fine-tuned model, + tokenizer
      checkpoints/                trainer checkpoints
      log_history.json            every logged train/eval record
      monitor_events.jsonl        training-monitor events
      probes.md, eval_samples.jsonl                        the end-of-run evaluation
      benchmarks.json             lm-eval's tasks (eval.benchmarks): every metric with its stderr, after and before
      benchmark_samples.jsonl     ...and each document's answer
      evaluation.json, evaluation_samples.jsonl            `python -m sft_sweep.evaluate` (other data: beside them,
                                                           evaluation-<overrides>.json)
      tune_progress.jsonl         an ASHA trial's reports
      merged/                     `python -m sft_sweep.export`: the model to serve (its card: merged/README.md)
      gguf/                       `... export format=gguf|ollama`: model-<outtype>.gguf, Modelfile
      load_test.json              `python -m sft_sweep.serve ... bench=true`: throughput and latency per concurrency
      load_test_guidellm.json, load_test_server.log        ...GuideLLM's whole report, the server's output
      report.html                 curves, events, probes, evaluation (`python -m sft_sweep.report`)
      metrics.json                written last: the run is *finished* once it exists

A finished run dir (one with metrics.json) is never reused unless overwrite=true. The manifest's
`status` says how the run ended, in status.py's words.
"""

import json
import logging
import os
import re
import shlex
import socket
import sys
import time
from pathlib import Path

import yaml

# A sweep's records and the atomic writes are the sweepers' (re-exported: a run's files are written the same way)
from hydra_pruning_sweepers.records import PROGRESS, SweepDir
from hydra_pruning_sweepers.records import append_jsonl as append_jsonl
from hydra_pruning_sweepers.records import read_jsonl as read_jsonl
from hydra_pruning_sweepers.records import write_text as write_text

from sft_sweep import dist
from sft_sweep import metric_names as names
from sft_sweep.environment import git_state, hardware, package_versions, pasteable_command
from sft_sweep.errors import RunDiverged, RunInterrupted, TrialPruned, UserError
from sft_sweep.status import Status

log = logging.getLogger("sft_sweep")

def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


# --- trainer checkpoints (checkpoints/checkpoint-<step>/) ---------------------------------------------
def checkpoint_step(checkpoint: Path) -> int:
    return int(Path(checkpoint).name.rsplit("-", 1)[-1])


def checkpoint_stamp(checkpoint: Path) -> Path:
    """What a checkpoint was trained on (data fingerprint, command) and the run's training time up to it (summed
    over the processes that trained it), written after the trainer's own files."""
    return Path(checkpoint) / "sft_sweep.json"


def checkpoint_runtime(checkpoint: Path) -> float:
    """Seconds the run had trained when `checkpoint` was saved, over all its processes (0 without a stamp)."""
    stamp = checkpoint_stamp(checkpoint)
    return float(read_json(stamp).get(names.TRAIN_RUNTIME) or 0.0) if stamp.is_file() else 0.0


def checkpoints_newest_first(folder: Path) -> list[Path]:
    return sorted(Path(folder).glob("checkpoint-*"), key=checkpoint_step, reverse=True)


def is_complete_checkpoint(checkpoint: Path) -> bool:
    """transformers writes trainer_state.json last (after weights, optimizer, scheduler, RNG states):
    a checkpoint is complete when that file parses and the weights are there."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any((checkpoint / name).is_file() for name in ("adapter_model.safetensors", "model.safetensors",
                                                          "model.safetensors.index.json"))


class RunDir:
    def __init__(self, path):
        self.path = Path(path)

    @classmethod
    def current(cls) -> "RunDir":
        """The run dir Hydra made for this job."""
        from hydra.core.hydra_config import HydraConfig

        return cls(HydraConfig.get().runtime.output_dir)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # --- names ------------------------------------------------------------------------------------
    hydra_config = property(lambda self: self.path / ".hydra" / "config.yaml")
    hydra_overrides = property(lambda self: self.path / ".hydra" / "overrides.yaml")
    log_file = property(lambda self: self.path / "train.log")
    manifest = property(lambda self: self.path / "run_manifest.json")
    base_model = property(lambda self: self.path / "base_model")
    adapter = property(lambda self: self.path / "adapter")
    full_model = property(lambda self: self.path / "model")
    checkpoints = property(lambda self: self.path / "checkpoints")
    log_history = property(lambda self: self.path / "log_history.json")
    monitor_events = property(lambda self: self.path / "monitor_events.jsonl")
    probes = property(lambda self: self.path / "probes.md")
    eval_samples = property(lambda self: self.path / "eval_samples.jsonl")
    evaluation = property(lambda self: self.path / "evaluation.json")
    evaluation_samples = property(lambda self: self.path / "evaluation_samples.jsonl")
    benchmarks = property(lambda self: self.path / "benchmarks.json")  # lm-eval's scores, after and before
    benchmark_samples = property(lambda self: self.path / "benchmark_samples.jsonl")  # ...and each answer
    tune_progress = property(lambda self: self.path / PROGRESS)  # an ASHA trial's reports (the sweepers')
    merged = property(lambda self: self.path / "merged")
    load_test = property(lambda self: self.path / "load_test.json")  # the served export under load (load_test.py)
    load_test_raw = property(lambda self: self.path / "load_test_guidellm.json")  # ...GuideLLM's whole report
    load_test_server_log = property(lambda self: self.path / "load_test_server.log")  # ...the server's output
    gguf = property(lambda self: self.path / "gguf")
    report = property(lambda self: self.path / "report.html")
    metrics = property(lambda self: self.path / "metrics.json")

    def evaluation_files(self, overrides: list[str]) -> tuple[Path, Path]:
        """Where `python -m sft_sweep.evaluate` writes (evaluation.json, evaluation_samples.jsonl): those names for
        the run's own data, and beside them, named by the overrides, for any other (data=alpaca ->
        evaluation-data=alpaca.json): an evaluation on other data never overwrites the run's own."""
        if not overrides:
            return self.evaluation, self.evaluation_samples
        tag = re.sub(r"[^A-Za-z0-9_.=,+-]+", "_", ",".join(overrides))[:120]
        return self.path / f"evaluation-{tag}.json", self.path / f"evaluation_samples-{tag}.jsonl"

    def name_base_relative_to_adapter(self) -> None:
        """adapter_config.json names the base its adapter was trained on: for a base built into the run dir
        (base_model/), as a path relative to the adapter (../base_model) rather than this machine's absolute path,
        so a copied or shared run dir's adapter loads with plain PEFT (from the adapter's folder)."""
        path = self.adapter / "adapter_config.json"
        config = read_json(path)
        config["base_model_name_or_path"] = os.path.relpath(self.base_model, self.adapter)
        write_json(path, config)

    def weights(self, lora: bool) -> Path:
        return self.adapter if lora else self.full_model

    # --- the finished-run rule --------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.metrics.is_file()

    def refuse_if_finished(self, overwrite: bool) -> None:
        if self.finished and not overwrite:
            raise UserError(f"{self.path} already holds a finished run ({self.metrics.name}); "
                            f"choose another hydra.run.dir or pass overwrite=true")

    def check_writable(self) -> None:
        """Before anything is written: the dir can be made and written (not a file, not read-only)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise UserError(f"cannot write the run dir {self.path}: {exc.strerror or exc}") from None

    # --- writing a run's records ------------------------------------------------------------------
    def start(self, config: dict) -> None:
        if dist.is_main_process():
            write_json(self.manifest, {"status": Status.STARTED, "started_at": time.time(),
                                       "command": pasteable_command(), "config": config,
                                       "seed": config["seed"], "git": git_state(), "versions": package_versions(),
                                       "hardware": hardware(), "host": socket.gethostname(), "pid": os.getpid()})

    def update(self, **fields) -> None:
        """Add fields to the manifest (the data fingerprint once the data is built, where a run resumed from)."""
        if dist.is_main_process() and self.manifest.is_file():
            write_json(self.manifest, {**read_json(self.manifest), **fields})

    def set_status(self, status: Status, **extra) -> None:
        if dist.is_main_process() and self.manifest.is_file():
            write_json(self.manifest, {**read_json(self.manifest), "status": status.value, **extra})

    @property
    def status(self) -> Status | None:
        """How the run ended, as its manifest says (None: no manifest)."""
        return Status(read_json(self.manifest)["status"]) if self.manifest.is_file() else None

    def fail(self, exc: BaseException) -> None:
        """Record how the run ended early: the error in train.log and the manifest. A run whose records
        are written stays as it ended (ASHA ends a trial's process in its last report, after them)."""
        if self.finished:
            return
        stopped = isinstance(exc, SystemExit) and exc.code in (0, None)  # a sweep scheduler stopped the trial
        interrupted = isinstance(exc, (KeyboardInterrupt, RunInterrupted))
        status = (Status.DIVERGED if isinstance(exc, RunDiverged) else Status.PRUNED if isinstance(exc, TrialPruned)
                  else Status.INTERRUPTED if interrupted else Status.STOPPED if stopped else Status.FAILED)
        reason = ("the sweep's scheduler stopped it at its last report" if stopped else
                  f"{type(exc).__name__}: {exc}".splitlines()[0])
        # Into train.log only: the console already gets the one-line error (or Hydra's traceback).
        record = log.makeRecord(log.name, logging.INFO if stopped else logging.ERROR, __file__, 0, "run %s: %s",
                                (status, reason), None if stopped or isinstance(exc, (UserError, KeyboardInterrupt))
                                else (type(exc), exc, exc.__traceback__))
        try:
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.FileHandler):
                    handler.handle(record)
            self.set_status(status, **({} if stopped else {"error": reason}))
        except OSError as error:  # (a full disk): the failure is said where it can be, once
            print(f"note: could not record the run's end in {self.manifest} ({error.strerror or error})",
                  file=sys.stderr)

    def write_records(self, log_history: list, metrics: dict, status: Status) -> None:
        """The run's last writes; metrics.json goes last and marks the run finished."""
        write_json(self.log_history, log_history)
        self.set_status(status)
        write_json(self.metrics, metrics)

    def read_metrics(self) -> dict:
        return read_json(self.metrics)

    def saved_config(self) -> dict:
        """The run's composed config as Hydra saved it ({} where there is none)."""
        return (yaml.safe_load(self.hydra_config.read_text(encoding="utf-8")) if self.hydra_config.is_file()
                else None) or {}

    def commands(self) -> dict:
        """What to do with the run: run it again, evaluate, export, chat, rebuild its report."""
        where = shlex.quote(str(self.path))
        return {"reproduce": read_json(self.manifest).get("command") if self.manifest.is_file() else None,
                "evaluate": f"python -m sft_sweep.evaluate run_dir={where}",
                "export": f"python -m sft_sweep.export run_dir={where}",
                "chat": f"python -m sft_sweep.chat run_dir={where}",
                "serve": f"python -m sft_sweep.serve run_dir={where}",
                "report": f"python -m sft_sweep.report dir={where}"}

    # --- reading a finished run back --------------------------------------------------------------
    def overrides(self) -> list[str]:
        if not self.hydra_overrides.is_file():
            raise UserError(f"{self.hydra_overrides} not found: {self.path} is not a run dir")
        return list(yaml.safe_load(self.hydra_overrides.read_text(encoding="utf-8")) or [])


def trial_run(sweep: SweepDir, number: int) -> RunDir:
    """A sweep's trial `number` as a run (the sweepers' SweepDir knows its dir, not what an sft-sweep run holds)."""
    return RunDir(sweep.trial_dir(number))


def best_run(sweep: SweepDir) -> RunDir:
    return RunDir(sweep.best_run_dir())


def sweep_report_file(sweep: SweepDir) -> Path:
    """sft-sweep's page for a sweep, beside the sweepers' records (report.py writes it)."""
    return sweep.path / "report.html"


