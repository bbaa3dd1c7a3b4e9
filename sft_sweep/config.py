"""The config: where conf/ is, the resolvers its YAML uses, composing it outside `python -m sft_sweep`
(the data/evaluate CLIs, benchmarks, tests), and the checks that run before any heavy work.

    ${asset:sample/chat.jsonl}  -> absolute path of a file shipped in sft_sweep/assets/
    ${mul:2,${lora.r}}          -> product (lora_alpha follows 2*r unless set)
"""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sft_sweep.errors import UserError

# conf/ sits beside the package; an absolute path works under `python -m` too.
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
ASSETS = Path(__file__).resolve().parent / "assets"


def asset_path(relative: str) -> str:
    path = ASSETS / relative
    if not path.exists():
        raise FileNotFoundError(f"no asset {relative!r} in {ASSETS}")
    return str(path)


def multiply(*factors):
    product = 1
    for factor in factors:
        product *= factor
    return product


def register_resolvers() -> None:
    """Called by every entrypoint before Hydra composes (idempotent)."""
    OmegaConf.register_new_resolver("asset", asset_path, replace=True)
    OmegaConf.register_new_resolver("mul", multiply, replace=True)


def compose(overrides: list[str] = (), hydra: bool = False) -> DictConfig:
    """conf/config.yaml with overrides, as `python -m sft_sweep` would compose it (no run dir).
    A bad override is a one-line UserError (Hydra's own message)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    register_resolvers()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return hydra_compose("config", overrides=list(overrides), return_hydra_config=hydra)
    except (HydraException, OmegaConfBaseException) as exc:
        raise UserError(" ".join(str(exc).split())) from None


def parse_cli_args(argv: list[str], doc: str, required: tuple[str, ...] = (), defaults: dict | None = None) -> dict:
    """key=value arguments (Hydra style) for the small CLIs; `--help` prints `doc` and exits."""
    if any(a in ("-h", "--help") for a in argv):
        print(doc.strip())
        raise SystemExit(0)
    args = dict(defaults or {})
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise UserError(f"expected key=value, got {arg!r} (see --help)")
        args[key] = value
    missing = [k for k in required if k not in args]
    if missing:
        raise UserError(f"missing {', '.join(f'{k}=...' for k in missing)} (see --help)")
    return args


def plain(cfg: DictConfig) -> dict:
    """The resolved config as plain Python: PEFT and TRL check isinstance(x, list/dict), which
    OmegaConf nodes fail. (A sweep trial may run in a fresh Ray worker: register the resolvers.)"""
    register_resolvers()
    return OmegaConf.to_container(cfg, resolve=True)


# --- checks before any heavy work ---------------------------------------------------------------
