"""OmegaConf resolvers the YAML files use.

${asset:sample/chat.jsonl}  -> absolute path of a file shipped in sft_sweep/assets/
${mul:2,${lora.r}}          -> product (lora_alpha follows 2*r unless set)
"""

from pathlib import Path

from omegaconf import OmegaConf

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


OmegaConf.register_new_resolver("asset", asset_path, replace=True)
OmegaConf.register_new_resolver("mul", multiply, replace=True)
