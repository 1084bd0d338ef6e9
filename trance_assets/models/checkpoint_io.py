"""How a model folder is written and read: `config.json` + `model.safetensors` (torch parameter
names). One place for both model families, the training loop and the generator backends.

No Dagster imports: this module is part of the domain core.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def state_dict_cpu(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def save_model_dir(directory: str | Path, module: torch.nn.Module, config: dict) -> Path:
    """Write `config.json` and `model.safetensors` into `directory` (created when missing).

    The same weights always give the same bytes (so the file's sha256 identifies the weights): the
    safetensors header carries one metadata key only — with several, safetensors writes them in a
    random order."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_file(state_dict_cpu(module), str(d / WEIGHTS_FILE), metadata={"format": "pt"})
    (d / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
    return d


def load_model_dir(directory: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict, dict[str, torch.Tensor]]:
    """(config dict, state dict) of a folder written by `save_model_dir` (a `model.pt` state dict
    written by torch.save is read too, with weights_only)."""
    d = Path(directory)
    config = json.loads((d / CONFIG_FILE).read_text())
    if (d / WEIGHTS_FILE).exists():
        from safetensors.torch import load_file

        return config, load_file(str(d / WEIGHTS_FILE), device=str(map_location))
    return config, torch.load(d / "model.pt", map_location=map_location, weights_only=True)
