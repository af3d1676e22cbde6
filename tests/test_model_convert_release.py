"""The release's checkpoint as shipped: original Wan key names, sharded with an index;
``python -m model.convert_release`` and ``load_checkpoint`` with full coverage (issue 10)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from model.disentangle import SubjectDisentanglement
from model.weights.checkpoint import CheckpointError, load_checkpoint
from model.weights.release import main, to_diffusers_key, to_original_key

# Wan's own config.json fields for the tiny transformer (Wan's WanModel, not diffusers').
WAN_CONFIG = {"_class_name": "WanModel", "_diffusers_version": "0.30.0", "model_type": "i2v",
              "text_len": 512, "in_dim": 36, "dim": 16, "ffn_dim": 32, "freq_dim": 16,
              "out_dim": 16, "num_heads": 2, "num_layers": 2, "eps": 1e-06}


def tiny_transformer(seed: int):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=36,
        out_channels=16, text_dim=32, freq_dim=16, ffn_dim=32, num_layers=2, image_dim=16,
        added_kv_proj_dim=16, rope_max_seq_len=32).eval()


def forward(model) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        return model(hidden_states=torch.randn(1, 36, 2, 4, 6, generator=g),
                     timestep=torch.tensor([500]),
                     encoder_hidden_states=torch.randn(1, 512, 32, generator=g),
                     encoder_hidden_states_image=torch.randn(1, 5, 16, generator=g),
                     return_dict=False)[0]


def original_state_dict(model, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The model's weights under Wan's original names, checked against diffusers' own
    single-file converter (an oracle that knows Wan's format independently of our code)."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    ours = model.state_dict()
    original = {to_original_key(k): v.to(dtype).clone() for k, v in ours.items()}
    assert None not in original
    assert set(convert_wan_transformer_to_diffusers(dict(original))) == set(ours)
    assert all(to_diffusers_key(k) == d for k, d in zip(original, ours))
    return original


def write_release(folder: Path, state: dict[str, torch.Tensor], shards: int = 3) -> Path:
    """A release folder: Wan's config.json, ``shards`` safetensors and the index."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = sorted(state)
    weight_map = {}
    for n in range(shards):
        name = f"diffusion_pytorch_model-{n + 1:05d}-of-{shards:05d}.safetensors"
        part = keys[n::shards]
        save_file({k: state[k].contiguous() for k in part}, str(folder / name))
        weight_map.update(dict.fromkeys(part, name))
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 0}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(WAN_CONFIG))
    return folder


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    model = tiny_transformer(1)
    folder = write_release(tmp_path_factory.mktemp("rel") / "magref-480p", original_state_dict(model))
    return {"model": model, "dir": folder, "reference": forward(model)}


def test_convert_round_trip_three_shards_full_coverage_same_forward(release, tmp_path, capsys) -> None:
    from diffusers import WanTransformer3DModel

    out = tmp_path / "converted"
    assert main([str(release["dir"]), str(out)]) == 0
    assert "converted" in capsys.readouterr().out
    index = json.loads((out / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(release["model"].state_dict())
    assert len(set(index["weight_map"].values())) == 3
    # 1. diffusers loads the folder as it is.
    loaded = WanTransformer3DModel.from_pretrained(out).eval()
    assert (forward(loaded) - release["reference"]).abs().max() <= 1e-5
    # 2. --checkpoint OUT_DIR and --checkpoint RELEASE_DIR (converted on the fly) load every
    #    tensor into a differently initialised transformer and give the same forward.
    for source, naming in ((out, "diffusers"), (release["dir"], "wan-original")):
        fresh = tiny_transformer(7)
        assert (forward(fresh) - release["reference"]).abs().max() > 1e-3
        dis = SubjectDisentanglement.attach_to(fresh)
        dis.alpha.data.fill_(0.5)
        counts = load_checkpoint(source, fresh, dis)
        assert counts == {"transformer_tensors": len(fresh.state_dict()),
                          "alpha": int(source == out), "naming": naming}
        assert (dis.alpha == 0).all()
        assert (forward(fresh) - release["reference"]).abs().max() <= 1e-5


def test_module_entry_point_and_dtype(release, tmp_path) -> None:
    """bf16 shards (as the 14B ships) convert to fp32 exactly; ``python -m`` works."""
    bf16 = write_release(tmp_path / "bf16", original_state_dict(release["model"], torch.bfloat16), 2)
    proc = subprocess.run([sys.executable, "-m", "model.convert_release", str(bf16),
                           str(tmp_path / "out"), "--dtype", "fp32"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "bfloat16 -> float32" in proc.stdout
    weights = {}
    for shard in (tmp_path / "out").glob("diffusion_pytorch_model-*.safetensors"):
        weights.update(load_file(shard))
    for key, value in release["model"].state_dict().items():
        assert weights[key].dtype == torch.float32
        assert torch.equal(weights[key], value.to(torch.bfloat16).float()), key


def broken_release(release, tmp_path: Path, case: str) -> tuple[Path, str]:
    """Copy the release with one defect; return it and the key name the error must carry."""
    state = original_state_dict(release["model"])
    if case == "missing":
        key = "blocks.1.cross_attn.k_img.weight"
        del state[key]
        return write_release(tmp_path / case, state), key
    if case == "extra":
        key = "blocks.0.self_attn.q_extra.weight"
        state[key] = torch.zeros(16)
        return write_release(tmp_path / case, state), key
    if case in ("shape", "config_disagrees"):  # block 0 is where the config is checked
        key = "blocks.1.ffn.0.weight" if case == "shape" else "blocks.0.ffn.0.weight"
        state[key] = torch.zeros(33, 16)
        return write_release(tmp_path / case, state), key
    # The index places a key in a shard that lacks it (a shard written without it).
    folder = write_release(tmp_path / case, state)
    index = json.loads((folder / "diffusion_pytorch_model.safetensors.index.json").read_text())
    key, name = sorted(index["weight_map"].items())[4]
    shard = load_file(folder / name)
    del shard[key]
    save_file(shard, str(folder / name))
    return folder, key


@pytest.mark.parametrize("case", ["missing", "extra", "shape", "config_disagrees",
                                  "shard_lacks_indexed_key"])
def test_a_missing_or_extra_key_fails_naming_it(case: str, release, tmp_path, capsys) -> None:
    folder, key = broken_release(release, tmp_path, case)
    out = tmp_path / f"out-{case}"
    assert main([str(folder), str(out)]) == 2
    err = capsys.readouterr().err
    assert key in err and ": error: " in err and err.count("\n") == 1
    assert not out.exists() and not list(tmp_path.glob(f".out-{case}.tmp-*"))
    # Loading applies the same check and leaves the model as it was.
    fresh = tiny_transformer(7)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        load_checkpoint(folder, fresh, SubjectDisentanglement.attach_to(fresh))
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())


def test_loading_refuses_other_mismatches(release, tmp_path) -> None:
    from model.weights.checkpoint import save_checkpoint

    fresh = tiny_transformer(7)
    dis = SubjectDisentanglement.attach_to(fresh)
    # A head count that no tensor shape reveals.
    other = tmp_path / "heads"
    write_release(other, original_state_dict(release["model"]))
    (other / "config.json").write_text(json.dumps({**WAN_CONFIG, "num_heads": 4}))
    with pytest.raises(CheckpointError, match="4 attention heads"):
        load_checkpoint(other, fresh, dis)
    assert main([str(other), str(tmp_path / "o")]) == 0  # converter: heads come from config
    # Our single file holds the whole transformer or none of it, never a silent part.
    path = tmp_path / "part.safetensors"
    save_checkpoint(str(path), release["model"], dis)
    state = load_file(path)
    del state["transformer.blocks.0.attn1.to_q.weight"]
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match="missing 1 key.*blocks.0.attn1.to_q.weight"):
        load_checkpoint(path, fresh, dis)
    save_checkpoint(str(path), release["model"], dis, include_transformer=False)
    assert load_checkpoint(path, fresh, dis)["transformer_tensors"] == 0


def test_converter_cli_errors(release, tmp_path, capsys) -> None:
    assert main([str(tmp_path / "nowhere"), str(tmp_path / "o")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    out = tmp_path / "o"
    assert main([str(release["dir"]), str(out)]) == 0
    assert main([str(release["dir"]), str(out)]) == 2  # not over an existing result
    assert "--overwrite" in capsys.readouterr().err
    assert main([str(out), str(tmp_path / "again")]) == 2  # already diffusers' layout
    assert "already diffusers' layout" in capsys.readouterr().err
    no_config = tmp_path / "noconf"
    write_release(no_config, original_state_dict(release["model"]))
    (no_config / "config.json").unlink()
    assert main([str(no_config), str(tmp_path / "x")]) == 2
    assert "num_heads" in capsys.readouterr().err
