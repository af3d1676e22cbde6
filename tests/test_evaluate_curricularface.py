"""FaceSim-Cur: the IR backbone loads a checkpoint strictly, and the metric tells faces apart."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curation import synthetic
from curation.faces.pose import ARCFACE_TEMPLATE
from curation.faces.synthetic import astronaut, face_window, tom_hanks
from model.evaluate.curricularface import (
    TINY,
    CurricularFaceBackbone,
    CurricularFaceWeightsError,
    load_curricularface,
    tiny_curricularface,
)
from model.evaluate.entries import FACE, Entry, Reference
from model.evaluate.faces import (
    CurricularFaceSimilarity,
    align_face,
    similarity_transform,
)
from model.evaluate.opens2v import per_metric_json
from model.evaluate.scorer import EvaluateConfig, Evaluator, build_metrics


def test_ir101_state_dict_names_and_shapes_are_the_public_checkpoints():
    with torch.device("meta"):
        model = CurricularFaceBackbone()
    state = model.state_dict()
    assert len(model.body) == 3 + 13 + 30 + 3
    expected = {  # names and shapes of glint360k_curricular_face_r101_backbone.bin (TFace IR_101)
        "input_layer.0.weight": (64, 3, 3, 3), "input_layer.2.weight": (64,),
        "body.0.res_layer.0.running_var": (64,), "body.0.res_layer.1.weight": (64, 64, 3, 3),
        "body.0.res_layer.3.weight": (64,), "body.0.res_layer.4.weight": (64, 64, 3, 3),
        "body.3.shortcut_layer.0.weight": (128, 64, 1, 1), "body.3.shortcut_layer.1.bias": (128,),
        "body.16.shortcut_layer.0.weight": (256, 128, 1, 1), "body.46.shortcut_layer.0.weight": (512, 256, 1, 1),
        "body.48.res_layer.5.num_batches_tracked": (), "output_layer.0.weight": (512,),
        "output_layer.3.weight": (512, 512 * 7 * 7), "output_layer.4.running_mean": (512,),
    }
    assert {k: tuple(state[k].shape) for k in expected} == expected
    assert "output_layer.4.weight" not in state  # BatchNorm1d(affine=False), as TFace
    assert not any(k.startswith("body.0.shortcut_layer") for k in state)  # a max-pool: no parameters
    assert sum(p.numel() for p in model.parameters()) == 65_150_912


def test_tiny_saved_and_loaded_strictly_gives_the_same_embedding(tmp_path):
    model = tiny_curricularface("cpu")
    crops = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    crops[1] = crops[0]
    before = model.embed(crops)
    folder = model.save_pretrained(tmp_path / "saved")
    loaded = load_curricularface(str(folder), "cpu")
    assert loaded.config == TINY
    np.testing.assert_allclose(loaded.embed(crops), before, atol=1e-6)
    bare = tmp_path / "bare"  # a torch .bin beside its config, as a user's folder would hold
    bare.mkdir()
    (bare / "config.json").write_text((folder / "config.json").read_text())
    torch.save(model.state_dict(), bare / "weights.bin")
    np.testing.assert_allclose(load_curricularface(str(bare / "weights.bin"), "cpu").embed(crops), before, atol=1e-6)
    assert before[0] @ before[1] == pytest.approx(1.0, abs=1e-5)  # identical crops
    assert before[0] @ before[2] < 0.99  # a different image
    assert np.linalg.norm(before, axis=1) == pytest.approx(1.0, abs=1e-5)


def test_a_renamed_or_missing_key_fails_naming_the_file(tmp_path):
    folder = tiny_curricularface("cpu").save_pretrained(tmp_path / "ok")
    weights = CurricularFaceBackbone(TINY).state_dict()
    for case, change in {"renamed": lambda s: s.__setitem__("body.0.res_layer.9.weight", s.pop("body.0.res_layer.1.weight")),
                         "missing": lambda s: s.pop("output_layer.3.bias")}.items():
        bad = tmp_path / case
        bad.mkdir()
        (bad / "config.json").write_text((folder / "config.json").read_text())
        broken = dict(weights)
        change(broken)
        torch.save(broken, bad / "ckpt.pth")
        with pytest.raises(CurricularFaceWeightsError, match=rf"{case}/ckpt\.pth.*(res_layer\.1\.weight|output_layer\.3\.bias)"):
            load_curricularface(str(bad), "cpu")
    with pytest.raises(CurricularFaceWeightsError, match="ok2/model.safetensors.*missing keys"):
        (tmp_path / "ok2").mkdir()
        (tmp_path / "ok2" / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
        load_curricularface(str(tmp_path / "ok2"), "cpu")  # no config.json: read as IR-101, which it is not
    (folder / "extra.pth").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="2 weights files"):
        load_curricularface(str(folder), "cpu")


def test_alignment_puts_the_keypoints_on_the_template():
    rng = np.random.default_rng(1)
    angle, scale, shift = 0.3, 1.7, np.array([40.0, -12.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = (ARCFACE_TEMPLATE @ rotation.T) * scale + shift
    matrix = similarity_transform(points, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(points @ matrix[:, :2].T + matrix[:, 2], ARCFACE_TEMPLATE, atol=1e-4)
    image = rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)
    assert align_face(image, ARCFACE_TEMPLATE * 2).shape == (112, 112, 3)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    return str(tiny_curricularface("cpu").save_pretrained(tmp_path_factory.mktemp("curricularface")))


def test_facesim_cur_same_face_above_other_person_and_in_facesim_json(tiny_weights, tmp_path):
    models = {"*": "tiny", "curricularface": tiny_weights}  # the loader's path, tiny random weights
    metrics = build_metrics(EvaluateConfig(metrics=["id_sim", "facesim_cur"], faces="dlib"), models, "cpu")
    assert [m.name for m in metrics] == ["id_sim", "facesim_cur"] and metrics[1].faces is metrics[0].faces
    ref = face_window(astronaut(), (256, 256))
    synthetic.write_video(tmp_path / "same.mp4", [ref] * 5)
    synthetic.write_video(tmp_path / "other.mp4", [face_window(tom_hanks(), (256, 256))] * 5)
    synthetic.write_video(tmp_path / "noface.mp4", [np.full((256, 256, 3), 90, np.uint8)] * 5)
    evaluator = Evaluator(EvaluateConfig(metrics=["id_sim", "facesim_cur"], frames=3), metrics=metrics)
    rows, cur = [], {}
    for name in ("same", "other", "noface"):
        entry_rows = evaluator.evaluate(Entry(name, "a face", tmp_path / f"{name}.mp4", [Reference(ref, "woman", FACE)]))
        rows += entry_rows
        cur[name] = next(r for r in entry_rows if r["metric"] == "facesim_cur")
    assert cur["same"]["status"] == "kept" and cur["same"]["value"] > 0.95
    assert cur["other"]["value"] < cur["same"]["value"] - 0.2
    assert cur["noface"]["status"] == "kept" and cur["noface"]["value"] == 0.0  # OpenS2V's value for no face
    assert f"curricularface={tiny_weights}" in cur["same"]["model"]
    facesim = per_metric_json(rows)["facesim"]
    assert set(facesim["same"]) == {"cur_score", "arc_score"} and facesim["same"]["cur_score"] == cur["same"]["value"]


def test_missing_weights_skip_the_metric_with_one_line_saying_how(tmp_path):
    for models in ({"*": "tiny", "curricularface": str(tmp_path / "nowhere.bin")}, {"face_dlib": "tiny"}):
        lines = []
        metrics = build_metrics(EvaluateConfig(metrics=["facesim_cur"], faces="dlib"), models, "cpu", say=lines.append)
        assert metrics == [] and len(lines) == 1 and "\n" not in lines[0]
        assert "'curricularface'" in lines[0] and "--models curricularface=PATH" in lines[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(Exception, match="holds no weights file"):
        CurricularFaceSimilarity({"*": "tiny", "curricularface": str(empty)}, "cpu")
