"""Stage 3 on the command line: its keys in --help, --print-config read back, user mistakes as one line."""

from __future__ import annotations

import pytest
import yaml
from conftest import run_script
from test_stage_framework import one_line_error

from pipelines.config import load_config, to_yaml
from pipelines.stage3_faces import Stage3Config


def test_printed_stage3_config_reads_back_unchanged(tmp_path):
    cfg = load_config(Stage3Config, None, ["faces.backend=dlib", "faces.filters.max_roll=15",
                                           "faces.pool.actors=3", "faces.select.per_identity=6"])
    assert cfg.faces.backend == "dlib" and cfg.faces.backend_config is cfg.faces.dlib
    path = tmp_path / "faces.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(Stage3Config, str(path)) == cfg and yaml.safe_load(path.read_text())


def test_help_lists_every_faces_key_with_its_meaning():
    result = run_script(["pipelines/stage3_faces.py", "--help"], timeout=120)
    assert result.returncode == 0
    for needle in ("faces.backend", "faces.margin_s", "faces.insightface.min_similarity", "faces.dlib.min_similarity",
                   "faces.filters.max_yaw", "faces.select.per_identity", "faces.references_pool.batch_size",
                   "the paper's \"adjacent segments\""):
        assert needle in result.stdout, needle


@pytest.mark.slow
def test_stage3_user_mistakes_are_one_line_and_exit_2(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["--run-dir", str(empty), "--models", "tiny"],
         ["has no clips table", f"run pipelines/stage1_clips.py --run-dir {empty} first"]),
        (["--run-dir", str(empty), "--set", "faces.backend=mtcnn"], ["faces.backend must be one of insightface, dlib"]),
        (["--run-dir", str(empty), "--set", "faces.references_pool.actors=2"], ["has no effect here"]),
        (["--run-dir", str(empty), "--models", "face_analysis=/no/such/pack"], ["/no/such/pack", "does not exist"]),
        (["--run-dir", str(empty), "--set", "faces.backend=dlib", "--models", "face_dlib=no_such_weights"],
         ["pip install no-such-weights"]),
    ]
    for args, needles in cases:
        one_line_error(run_script(["pipelines/stage3_faces.py", *args], timeout=120), *needles)
