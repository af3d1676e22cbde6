"""CurricularFace's IR backbone (IR-101 for OpenS2V-Eval's ``cur_score``), built here so a
user's checkpoint loads unchanged.

OpenS2V-Eval embeds faces with ``glint360k_curricular_face_r101_backbone.bin``: TFace's
``IR_101`` (Huang et al., *CurricularFace*, CVPR 2020; the "improved residual" network of
ArcFace). Its layout, which the state-dict keys below follow exactly:

* ``input_layer``: conv3x3 3->64 (no bias), BatchNorm2d, PReLU;
* ``body``: one flat ``Sequential`` of IR units, stages of [3, 13, 30, 3] units at widths
  64, 128, 256, 512; the first unit of every stage has stride 2 (112 -> 7 pixels). A unit is
  ``res_layer`` = BN, conv3x3, BN, PReLU, conv3x3 (the stride), BN, plus ``shortcut_layer``:
  a MaxPool2d(1, stride) when the width stays, else conv1x1 (stride) + BN;
* ``output_layer``: BatchNorm2d, Dropout(0.4), Flatten, Linear(512*7*7, 512),
  BatchNorm1d(512) without affine parameters (TFace's; face.evoLVe's has them, which
  ``affine_embedding_norm`` selects and the loader detects from the keys).

Input: 112x112 RGB scaled to [-1, 1]; the embedding is L2-normalised by ``embed`` (the
network itself returns it raw, as the checkpoint's class does). ``IRConfig`` makes depth and
widths configurable, so ``tiny`` is the same class at [1, 1, 1, 1] units and small widths.
``save_pretrained`` writes ``config.json`` + ``model.safetensors`` (diffusers' layout);
``from_pretrained`` reads that, or one bare weights file (``.bin``/``.pth``/``.pt``/
``.safetensors``, IR-101 unless a ``config.json`` sits beside it), strictly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class CurricularFaceWeightsError(ValueError):
    """A weights file or folder that does not hold this network's state dict (names the file)."""


@dataclass(frozen=True)
class IRConfig:
    stage_units: tuple[int, ...] = (3, 13, 30, 3)  # IR-101 (TFace builds it as ``num_layers=100``)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    embedding_dim: int = 512
    input_size: int = 112
    dropout: float = 0.4
    affine_embedding_norm: bool = False  # TFace: BatchNorm1d(512, affine=False)

    def __post_init__(self) -> None:
        if len(self.stage_units) != len(self.widths) or not self.stage_units:
            raise ValueError(f"IRConfig: stage_units {self.stage_units} and widths {self.widths} differ in length")
        if self.input_size % (2 ** len(self.widths)):
            raise ValueError(f"IRConfig: input_size {self.input_size} is not divisible by 2**{len(self.widths)}")

    @property
    def feature_side(self) -> int:
        return self.input_size // 2 ** len(self.widths)


TINY = IRConfig(stage_units=(1, 1, 1, 1), widths=(8, 16, 16, 32), embedding_dim=64)


class IRUnit(nn.Module):
    """One improved-residual unit (TFace's ``BasicBlockIR``)."""

    def __init__(self, in_width: int, width: int, stride: int):
        super().__init__()
        if in_width == width:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_width, width, 1, stride, bias=False),
                                                nn.BatchNorm2d(width))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_width),
            nn.Conv2d(in_width, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.PReLU(width),
            nn.Conv2d(width, width, 3, stride, 1, bias=False),
            nn.BatchNorm2d(width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class CurricularFaceBackbone(nn.Module):
    """The IR backbone; ``forward`` maps (N, 3, 112, 112) in [-1, 1] to raw (N, 512) embeddings."""

    def __init__(self, config: IRConfig | None = None):
        super().__init__()
        self.config = config = config or IRConfig()
        stem = config.widths[0]
        self.input_layer = nn.Sequential(nn.Conv2d(3, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.PReLU(stem))
        units, in_width = [], stem
        for count, width in zip(config.stage_units, config.widths):
            for i in range(count):
                units.append(IRUnit(in_width, width, 2 if i == 0 else 1))
                in_width = width
        self.body = nn.Sequential(*units)
        side = config.feature_side
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(in_width),
            nn.Dropout(config.dropout),
            nn.Flatten(),
            nn.Linear(in_width * side * side, config.embedding_dim),
            nn.BatchNorm1d(config.embedding_dim, affine=config.affine_embedding_norm),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_layer(self.body(self.input_layer(x)))

    @torch.no_grad()
    def embed(self, faces: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """Aligned RGB uint8 crops (N, 112, 112, 3) -> L2-normalised float32 embeddings (N, D)."""
        batch = np.ascontiguousarray(np.stack(list(faces)) if isinstance(faces, list) else faces)
        side = self.config.input_size
        if batch.ndim != 4 or batch.shape[1:] != (side, side, 3):
            raise ValueError(f"CurricularFace needs aligned ({side}, {side}, 3) RGB crops, got {batch.shape}")
        param = next(self.parameters())
        x = torch.from_numpy(batch).to(param.device).permute(0, 3, 1, 2).float().div(255).sub(0.5).div(0.5)
        out = self(x.to(param.dtype)).float()
        return torch.nn.functional.normalize(out, dim=1).cpu().numpy()

    def save_pretrained(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(folder / WEIGHTS_NAME))
        return folder

    @classmethod
    def from_pretrained(cls, source: str | Path) -> CurricularFaceBackbone:
        path = weights_file(source)
        state = read_state_dict(path)
        config_file = path.parent / CONFIG_NAME
        config = IRConfig(**{k: tuple(v) if isinstance(v, list) else v
                             for k, v in json.loads(config_file.read_text()).items()}) \
            if config_file.is_file() else IRConfig(affine_embedding_norm="output_layer.4.weight" in state)
        model = cls(config)
        missing, unexpected = _key_mismatch(model, state)
        if missing or unexpected:
            raise CurricularFaceWeightsError(
                f"{path}: not a CurricularFace IR backbone with {config.stage_units} units at widths "
                f"{config.widths}: missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
                f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:  # shapes: names match, sizes do not
            raise CurricularFaceWeightsError(f"{path}: {str(exc).splitlines()[-1].strip()}") from exc
        return model.eval()


def _key_mismatch(model: nn.Module, state: dict) -> tuple[list[str], list[str]]:
    expected, given = set(model.state_dict()), set(state)
    return sorted(expected - given), sorted(given - expected)


def weights_file(source: str | Path) -> Path:
    """The one weights file ``source`` names: the file itself, or the only one in the folder."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"CurricularFace weights {str(path)!r} do not exist")
    found = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if len(found) != 1:
        what = "no weights file" if not found else f"{len(found)} weights files ({', '.join(p.name for p in found)})"
        raise FileNotFoundError(f"CurricularFace folder {str(path)!r} holds {what}; it needs exactly one of "
                                f"{'/'.join(WEIGHT_SUFFIXES)} (e.g. glint360k_curricular_face_r101_backbone.bin)")
    return found[0]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors by name from a safetensors or torch file; a DataParallel ``module.`` prefix is dropped."""
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CurricularFaceWeightsError(f"{path}: unreadable weights ({type(exc).__name__}: {exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CurricularFaceWeightsError(f"{path}: not a state dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_curricularface(source: str, device: str, dtype=None) -> CurricularFaceBackbone:
    """The registry loader of role ``curricularface``: a weights file or a folder holding one.

    float32 unless ``dtype`` says otherwise: a face embedding compared by cosine gains
    nothing from bf16 and the network is small next to the video models."""
    model = CurricularFaceBackbone.from_pretrained(source)
    return model.to(device=device, dtype=dtype or torch.float32)


def tiny_curricularface(device: str) -> CurricularFaceBackbone:
    """The same class at ``TINY`` size with fixed random weights (seed 0): runs offline, means nothing."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CurricularFaceBackbone(TINY)
    return model.eval().to(device)
