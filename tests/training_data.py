"""Generated training data for the training tests: clips, PNG references, samples tables.

Built from the real ``samples`` schema and ``curation.synthetic``'s video writer; nothing
is downloaded. ``small_wan_dir`` writes a diffusers Wan I2V directory whose transformer is
wide enough (hidden 128) to memorise a clip, which the ``tiny`` preset (hidden 16) cannot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from curation.images import encode_png as png
from curation.synthetic import scene_frames, write_video

CAPTION = "a man walks a dog in the park"


def clip(path: Path, frames: int = 24, height: int = 48, width: int = 64, fps: int = 24,
         seed: int = 0) -> tuple[Path, list[np.ndarray]]:
    images = list(scene_frames(frames, [], height=height, width=width, seed=seed))
    return write_video(path, images, fps=fps), images


def sample_row(sample_id: str, uri: str, frames: list[np.ndarray], fps: float = 24.0,
               variant: bool = True, background: bool = True, **changes: Any) -> dict[str, Any]:
    """A samples row: one face ('man') and one object ('dog') cut from the first frame."""
    first = frames[0]
    face, dog = first[:24, :24], first[-24:, -32:]
    row = {
        "sample_id": sample_id, "clip_id": f"clip-{sample_id}", "uri": uri, "start_frame": 0,
        "end_frame": len(frames), "fps": fps, "caption": CAPTION, "subject_words": ["man", "dog"],
        "faces": [{"identity_id": "id0", "label": "man", "ref": png(face),
                   "variant": png(face[::-1].copy()) if variant else None, "source_id": "f0"}],
        "objects": [{"label": "dog", "ref": png(dog),
                     "variant": png(dog[:, ::-1].copy()) if variant else None, "source_id": "o0"}],
        "background": png(first) if background else None, "provenance": "{}",
    }
    row.update(changes)
    return row


def write_samples(path: Path, rows: list[dict[str, Any]]) -> Path:
    from schemas import schema_for, write_table

    # Built on the schema: columns a row leaves out (start_s, variant sources, ...) are null.
    write_table(pa.Table.from_pylist(rows, schema=schema_for("samples")), str(path), "samples")
    return path


def samples_table(folder: Path, count: int = 2, frames: int = 24) -> Path:
    """``count`` good samples over ``count`` generated clips, as one Parquet file."""
    rows = []
    for i in range(count):
        uri, images = clip(folder / f"clip{i}.mp4", frames=frames, seed=i)
        rows.append(sample_row(f"s{i}", str(uri), images))
    return write_samples(folder / "samples.parquet", rows)


def small_wan_dir(path: Path, hidden: int = 128) -> Path:
    """A diffusers Wan2.1 I2V directory: tiny encoders, a transformer of width ``hidden``."""
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel

    from model.tiny import tiny_wan_components

    components = tiny_wan_components()
    config = {k: v for k, v in dict(components["transformer"].config).items() if not k.startswith("_")}
    config.update(attention_head_dim=hidden // 2, ffn_dim=2 * hidden, added_kv_proj_dim=hidden)
    components["transformer"] = WanTransformer3DModel(**config)
    WanImageToVideoPipeline(**components).save_pretrained(path)
    return path
