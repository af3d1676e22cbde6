"""OpenS2V-Eval's output layout and its merged, normalised total, from our scores.

Their harness writes one JSON per metric into one folder, and ``merge_result.py`` reads
every ``*.json`` there, so ours go alone into their own folder with their names and
nesting (checked against the public ``eval/demo_result``):

    facesim.json          {id: {"cur_score": x, "arc_score": y}}
    gmescore.json         {id: {"gme_score": x}}
    aesthetic_score.json  {id: {"aes_score": x}}
    motionscore.json      {id: {"motion_fb": x, "motion_lk": y}}
    nexusscore.json       {id: {"nexus_score": x}}
    naturalscore_N.json   {id: "4"}                 (N = 1, 2, 3: one judgement each)

An output that was not scored for an id is left out of that id's object (their merge
tests for each key), and an id with nothing in a file is left out of that file.
``merged_total`` reproduces their merge: per metric the mean over ids of the value
clipped to its range, min-max normalised, then weighted (Open-Domain: aes 0.12, motion
0.12, facesim_cur 0.20, gme 0.12, nexus 0.20, natural 0.24; Human-Domain drops nexus).
Every merged metric of ours is on their scale, so their ranges apply to all of them:

* ``aes_score``: the LAION aesthetic head on CLIP ViT-L/14, theirs (stage 1's ``aesthetic``);
* ``motion_score``: ``motion_fb``, Farneback flow amplitude computed as theirs;
* ``facesim_cur``: CurricularFace IR-101 with the user's copy of their checkpoint, their
  alignment and clipping (``faces.py``); 0.0 where no frame shows a face, as theirs;
* ``gme_score``: GME-Qwen2-VL text-frame cosine; the ``gme`` role's default is the 2B model,
  theirs the 7B (``--models gme=Alibaba-NLP/gme-Qwen2-VL-7B-Instruct`` for theirs);
* ``nexus_score`` (substitute): their form, mean crop cosine / frames with a detection at
  their 32 frames, with GroundingDINO + DINO in place of YOLO-World + GME (``subjects.py``);
* ``natural_score`` (substitute): 1-5 from an open VLM (``captioner``) asked their rubric, in
  place of GPT-4o (``judge.py``).

A total with a substitute is comparable in scale, not equal to theirs; ``total_notes`` names
the substitutes in it and any weighted metric without values (their merge counts it as 0,
so a total without ``facesim_cur`` weights is 0.20 lower: supply its weights).

Two versions of their harness: ``1.0`` (above; the layout the leaderboard's first results
used, and our default) and ``1.1`` (their current ``merge_result.py``): ``motionscore.json``
becomes ``motion_amplitude.json`` (same ``motion_fb``/``motion_lk``) plus
``motion_smoothness.json`` ``{id: {"motion_smoothness": x}}``, and the Open-Domain weights are
aes 0.16, motion smoothness 0.06, motion amplitude 0.02, facesim_cur 0.20, gme 0.12, nexus
0.20, natural 0.24 (Human-Domain 0.18, 0.09, 0.03, 0.25, 0.15, natural 0.30). Their 1.1
smoothness is the share of frames without a Q-Align quality jump; ours is VBench's
frame-interpolation form (``motion.py``), a substitute on the same 0-1 scale.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

VERSIONS = ("1.0", "1.1")
# file name -> {key in the file: our metric}; a str value means the file maps id -> str(value)
LAYOUT: dict[str, dict[str, str] | str] = {
    "facesim": {"cur_score": "facesim_cur", "arc_score": "id_sim"},
    "gmescore": {"gme_score": "gme_score"},
    "aesthetic_score": {"aes_score": "aesthetic"},
    "motionscore": {"motion_fb": "motion_fb", "motion_lk": "motion_lk"},
    "nexusscore": {"nexus_score": "nexus_score"},
    "naturalscore_1": "naturalscore_1",
    "naturalscore_2": "naturalscore_2",
    "naturalscore_3": "naturalscore_3",
}
LAYOUTS: dict[str, dict[str, dict[str, str] | str]] = {
    "1.0": LAYOUT,
    "1.1": {**{k: v for k, v in LAYOUT.items() if k != "motionscore"},
            "motion_amplitude": {"motion_fb": "motion_fb", "motion_lk": "motion_lk"},
            "motion_smoothness": {"motion_smoothness": "motion_smoothness"}},
}
# (min, max) as in their merge script; the motion ones are also taken as absolute values
RANGES = {"aes_score": (4.0, 7.0), "motion_score": (0.0, 1.0), "motion_amplitude": (0.0, 1.0),
          "motion_smoothness": (0.0, 1.0), "facesim_cur": (0.0, 1.0), "gme_score": (0.0, 1.0),
          "nexus_score": (0.0, 0.05), "natural_score": (1.0, 5.0)}
ABSOLUTE = ("motion_score", "motion_amplitude", "motion_smoothness")
WEIGHTS = {
    "Open-Domain": {"aes_score": 0.12, "motion_score": 0.12, "facesim_cur": 0.20, "gme_score": 0.12,
                    "nexus_score": 0.20, "natural_score": 0.24},
    "Human-Domain": {"aes_score": 0.15, "motion_score": 0.15, "facesim_cur": 0.25, "gme_score": 0.15,
                     "natural_score": 0.30},
}
WEIGHTS["Single-Domain"] = WEIGHTS["Open-Domain"]
WEIGHTS_1_1 = {
    "Open-Domain": {"aes_score": 0.16, "motion_smoothness": 0.06, "motion_amplitude": 0.02, "facesim_cur": 0.20,
                    "gme_score": 0.12, "nexus_score": 0.20, "natural_score": 0.24},
    "Human-Domain": {"aes_score": 0.18, "motion_smoothness": 0.09, "motion_amplitude": 0.03, "facesim_cur": 0.25,
                     "gme_score": 0.15, "natural_score": 0.30},
}
WEIGHTS_1_1["Single-Domain"] = WEIGHTS_1_1["Open-Domain"]
WEIGHTS_BY_VERSION = {"1.0": WEIGHTS, "1.1": WEIGHTS_1_1}
SUBSTITUTES = {
    "nexus_score": "GroundingDINO + DINO in place of YOLO-World + GME, in their form (mean cosine / frames "
                   "with a detection at 32 frames)",
    "natural_score": "an open VLM judge (captioner role) in place of GPT-4o, their 1-5 rubric",
    "motion_smoothness": "VBench's frame-interpolation smoothness (flow-rebuilt frames) in place of their "
                         "Q-Align artifact-frame share (harness 1.1)",
}


def _check_version(version: str) -> None:
    if version not in VERSIONS:
        raise ValueError(f"unknown OpenS2V-Eval version {version!r}; use one of {', '.join(VERSIONS)}")


def per_metric_json(rows: Iterable[dict[str, Any]], version: str = "1.0") -> dict[str, dict[str, Any]]:
    """Score rows (``entry_id``, ``metric``, ``value``, ``status``) -> {file name: content}, in
    harness ``version``'s layout."""
    _check_version(version)
    layout = LAYOUTS[version]
    values: dict[str, dict[str, float]] = {}
    for row in rows:
        if row.get("value") is not None and row.get("status") == "kept":
            values.setdefault(row["entry_id"], {})[row["metric"]] = float(row["value"])
    files: dict[str, dict[str, Any]] = {name: {} for name in layout}
    for entry_id, scores in values.items():
        for name, keys in layout.items():
            if isinstance(keys, str):
                if keys in scores:
                    files[name][entry_id] = str(round(scores[keys]))
                continue
            found = {key: scores[metric] for key, metric in keys.items() if metric in scores}
            if found:
                files[name][entry_id] = found
    return files


def write_jsons(rows: Iterable[dict[str, Any]], folder: str | Path, version: str = "1.0") -> list[Path]:
    """The per-metric JSONs, alone in ``folder`` (created; stale ones of ours, of either version,
    replaced or removed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    files = per_metric_json(rows, version)
    for other in {name for layout in LAYOUTS.values() for name in layout} - set(files):
        (folder / f"{other}.json").unlink(missing_ok=True)
    for name, content in files.items():
        path = folder / f"{name}.json"
        if content:
            path.write_text(json.dumps(content, indent=4))
            written.append(path)
        elif path.exists():
            path.unlink()
    return written


def read_folder(folder: str | Path) -> dict[str, dict[str, Any]]:
    """Every ``*.json`` of the folder, merged per id and renamed as their merge does."""
    merged: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(folder).glob("*.json")):
        for entry_id, value in json.loads(path.read_text()).items():
            merged.setdefault(entry_id, {})[path.stem] = value
    renames = {"aesthetic_score": ("aes_score", "aes_score"), "motionscore": ("motion_fb", "motion_score"),
               "motion_amplitude": ("motion_fb", "motion_amplitude"),
               "motion_smoothness": ("motion_smoothness", "motion_smoothness"),
               "facesim": ("cur_score", "facesim_cur"), "gmescore": ("gme_score", "gme_score"),
               "nexusscore": ("nexus_score", "nexus_score")}
    for scores in merged.values():
        for file_name, (inner, outer) in renames.items():
            if file_name in scores:
                inside = scores.pop(file_name)
                if isinstance(inside, dict) and inner in inside:
                    scores[outer] = inside[inner]
        natural = [float(scores.pop(k)) for k in ("naturalscore_1", "naturalscore_2", "naturalscore_3")
                   if k in scores and scores[k] is not None]
        if natural:
            scores["natural_score"] = sum(natural) / len(natural)
    return merged


def merged_total(merged: dict[str, dict[str, Any]], domain: str = "Open-Domain",
                 version: str = "1.0") -> dict[str, float]:
    """Their normalised per-metric means and weighted total (keys as in their output JSON)."""
    _check_version(version)
    if domain not in WEIGHTS:
        raise ValueError(f"unknown OpenS2V domain {domain!r}; use one of {', '.join(WEIGHTS)}")
    sums = dict.fromkeys(RANGES, 0.0)
    counts = dict.fromkeys(RANGES, 0)
    for scores in merged.values():
        for key, (low, high) in RANGES.items():
            if key not in scores or (key == "nexus_score" and scores[key] == 0):
                continue  # their merge skips a zero NexusScore (nothing detected)
            value = float(scores[key])
            if key in ABSOLUTE:
                value = abs(value)
            value = min(value, high) if key not in ("aes_score", "natural_score") else max(min(value, high), low)
            sums[key] += value
            counts[key] += 1
    normalised = {}
    for key, (low, high) in RANGES.items():
        mean = sums[key] / counts[key] if counts[key] else 0.0
        normalised[key] = (mean - low) / (high - low)
    weights = WEIGHTS_BY_VERSION[version][domain]
    out = {"total_score": sum(w * normalised[k] for k, w in weights.items())}
    out.update({k: normalised[k] for k in weights})
    return out


def total_notes(merged: dict[str, dict[str, Any]], domain: str = "Open-Domain",
                version: str = "1.0") -> dict[str, Any]:
    """What the domain's total is made of: the substitutes in it and the weighted metrics with no value."""
    _check_version(version)
    weights = WEIGHTS_BY_VERSION[version][domain]
    present = {key for scores in merged.values() for key in scores}
    return {"substitutes": {k: v for k, v in SUBSTITUTES.items() if k in weights and k in present},
            "missing": sorted(k for k in weights if k not in present)}
