"""Object boxes with GroundingDINO (MAGREF Appendix B.2, Eq. 11).

One text query per clip holds every label of the clip and the face query
(``"man. dog. red car. human face."``), and GroundingDINO looks at a few keyframes of
the clip (decoded before, on CPU, by ``curation.frames.FrameReader``). A batch of
clips is one forward pass per keyframe size: each keyframe is paired with its clip's
query, texts padded.

From the model's per-token scores we read, for each query slot and each label, the
label's score: the mean probability over the label's tokens (the phrase must match as
a whole, GroundingDINO's text threshold) and the box score: the best token of the
best label (its box threshold). A slot is a detection of that label when both pass.

Per label we keep the keyframe where that label scores best (the largest sum of its
detection scores, so a frame that shows both dogs beats a frame that shows one dog
slightly better), and on it the ``max_instances`` best boxes: one view of each thing,
so the same dog is not cut out three times from three frames. Face boxes are kept on
those frames only: the face filter compares an object with the faces of its own frame.

Preprocessing runs on the model's device (resize so the short side is ``shortest`` and
the long side at most ``longest``, ImageNet normalisation, zero padding with a pixel
mask), so a GPU actor spends no time in PIL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pyarrow as pa

from curation import processors
from curation.envelope import put_column, run_isolated
from curation.frames import FRAMES, FrameRequest, decode_frames, uniform
from curation.models import default_dtype, load
from curation.objects.labels import LABELS, clip_labels
from curation.operator import ActorPool, TaskPool, setting

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DETECTIONS = "_detections"  # private column: list of detection structs per clip row
FACE_QUERY = "human face"


@dataclass
class GroundingConfig:
    keyframes: int = setting(3, help="frames per clip GroundingDINO looks at, evenly spread (first and last included)")
    max_side: int = setting(1920, help=
        "keyframes are decoded at the source size, scaled down only above this long side")
    box_threshold: float = setting(0.35, help=
        "a box's best label token must score above this (GroundingDINO's default)")
    text_threshold: float = setting(0.25, help="and its label's tokens above this on average (GroundingDINO's default)")
    max_instances: int = setting(6, help="boxes kept per label (on its best keyframe)")
    max_faces: int = setting(8, help="face boxes kept per keyframe, for the face filter")
    face_query: str = setting(FACE_QUERY, help="what GroundingDINO is asked for the face masks (Eq. 15)")
    images_per_forward: int = setting(12, help="keyframes per forward pass; bounds activation memory")
    pool: ActorPool = setting(factory=lambda: ActorPool(actors=1, batch_size=4, num_cpus=0.5, num_gpus=1.0), help=
        "batch_size = clips per call; one GPU per actor when the job uses GPUs (--gpus)")
    decode_pool: TaskPool = setting(factory=lambda: TaskPool(batch_size=4, num_cpus=0.5), help=
        "the CPU step before it that decodes the keyframes (Ray tasks)")

    def __post_init__(self) -> None:
        for name in ("box_threshold", "text_threshold"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"grounding.{name} must be within [0, 1], got {getattr(self, name)}")
        if min(self.keyframes, self.max_instances, self.max_faces, self.images_per_forward) < 1:
            raise ValueError("grounding.keyframes, max_instances, max_faces and images_per_forward must be >= 1")
        if self.max_side < 16:
            raise ValueError(f"grounding.max_side must be >= 16, got {self.max_side}")


def keyframe_request(config: GroundingConfig) -> FrameRequest:
    """What ``FrameReader`` decodes for stage 2: ``keyframes`` frames evenly over the clip, at the
    source size (masks and references keep its detail) unless its long side exceeds ``max_side``."""
    def size(width: int, height: int) -> tuple[int, int]:
        scale = min(1.0, config.max_side / max(width, height))
        return max(1, int(round(width * scale))), max(1, int(round(height * scale)))

    return uniform(config.keyframes, size=size, interpolation="AREA")


@dataclass
class GroundingModel:
    """What the registry builds for the ``grounding`` role."""

    model: Any  # GroundingDinoForObjectDetection
    tokenizer: Any  # BERT tokenizer (fast: offsets give each label's tokens)
    device: str
    dtype: Any
    shortest: int = 800  # the released models' input size
    longest: int = 1333


@dataclass
class Detection:
    label: str
    frame: int  # position in the clip's keyframes
    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the keyframe's pixels
    face: bool = False


def query_of(labels: list[str], face_query: str) -> tuple[str, list[str], list[tuple[int, int]]]:
    """The query text, its names (labels + the face query, once each) and each name's character span."""
    names = list(dict.fromkeys([*labels, face_query]))
    spans, text = [], ""
    for name in names:
        spans.append((len(text), len(text) + len(name)))
        text += name + ". "
    return text.strip(), names, spans


def model_size(height: int, width: int, shortest: int, longest: int) -> tuple[int, int]:
    """DETR's resize rule: short side ``shortest`` unless that makes the long side exceed ``longest``."""
    scale = min(shortest / min(height, width), longest / max(height, width))
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def normalised(images: list[np.ndarray], sizes: list[tuple[int, int]], device: str) -> list:
    """Each (H, W, 3) uint8 frame as a float (3, h, w) tensor on ``device``: resized to its
    ``(h, w)`` (bilinear, antialiased) and ImageNet-normalised, as GroundingDINO's and SAM2's
    processors do, without PIL.

    Ours stands in for the torch processors (``GroundingDinoImageProcessor``,
    ``Sam2ImageProcessor``) where torchvision does not run (it does not import beside the CPU
    torch here; ``curation/processors.py`` decides); tests/test_preprocessing_parity.py checks
    it against ``GroundingDinoImageProcessorPil``, and the torch processors where they run."""
    import torch
    import torch.nn.functional as F

    mean = torch.tensor(IMAGENET_MEAN, device=device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(3, 1, 1)
    out = []
    for image, size in zip(images, sizes):
        x = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1).float().div_(255.0)
        if tuple(size) != tuple(image.shape[:2]):
            x = F.interpolate(x[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
        out.append((x - mean) / std)
    return out


def pixel_batch(images: list[np.ndarray], shortest: int, longest: int, device: str, dtype: Any):
    """Resized, normalised, zero-padded pixels (B, 3, H, W) and the pixel mask (B, H, W):
    ``GroundingDinoImageProcessor``'s where torchvision runs, else ours."""
    import torch

    if processors.use_official():
        pixels, mask = processors.grounding_pixels(images, shortest, longest, device)
        return pixels.to(dtype), mask

    resized = normalised(images, [model_size(*image.shape[:2], shortest, longest) for image in images], device)
    height, width = max(x.shape[1] for x in resized), max(x.shape[2] for x in resized)
    pixels = torch.zeros(len(resized), 3, height, width, device=device)
    mask = torch.zeros(len(resized), height, width, dtype=torch.long, device=device)
    for i, x in enumerate(resized):
        pixels[i, :, :x.shape[1], :x.shape[2]] = x
        mask[i, :x.shape[1], :x.shape[2]] = 1
    return pixels.to(dtype), mask


def token_positions(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[list[int]]:
    """For each name's character span, the token positions inside it."""
    return [[t for t, (a, b) in enumerate(offsets) if b > a and a >= start and b <= end] for start, end in spans]


def detect(grounding: GroundingModel, images: list[np.ndarray], queries: list[tuple[list[str], list[tuple[int, int]], str]],
           config: GroundingConfig) -> list[list[Detection]]:
    """Detections per image; ``queries[i]`` is image i's ``(names, spans, text)``.

    Runs ``images_per_forward`` images per forward pass, and only images of one input
    size together: GroundingDINO's backbone sees zero padding, so padding a frame to a
    bigger neighbour's size would change its boxes, and a clip's objects would depend on
    which clips shared its batch (resume must give the same rows as one run).
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(model_size(*image.shape[:2], grounding.shortest, grounding.longest), []).append(i)
    out: list[list[Detection]] = [[] for _ in images]
    step = config.images_per_forward
    for members in groups.values():
        for start in range(0, len(members), step):
            chunk = members[start:start + step]
            found = _detect_chunk(grounding, [images[i] for i in chunk], [queries[i] for i in chunk], config)
            for i, dets in zip(chunk, found):
                out[i] = dets
    return out


def _detect_chunk(grounding: GroundingModel, images, queries, config: GroundingConfig) -> list[list[Detection]]:
    import torch

    g = grounding
    texts = [text for _, _, text in queries]
    encoded = g.tokenizer(texts, padding=True, return_tensors="pt", return_offsets_mapping=True)
    offsets = encoded.pop("offset_mapping").tolist()
    pixels, pixel_mask = pixel_batch(images, g.shortest, g.longest, g.device, g.dtype)
    with torch.inference_mode():
        outputs = g.model(pixel_values=pixels, pixel_mask=pixel_mask, **{k: v.to(g.device) for k, v in encoded.items()})
    probs = outputs.logits.float().sigmoid().cpu()  # (B, queries, max_text_len)
    boxes = outputs.pred_boxes.float().cpu()  # (B, queries, 4): cx, cy, w, h relative to the image
    results = []
    for i, (names, spans, _) in enumerate(queries):
        positions = token_positions([tuple(o) for o in offsets[i]], spans)
        height, width = images[i].shape[:2]
        found = []
        scores = probs[i]
        maxes = torch.full((scores.shape[0], len(names)), -1.0)
        means = torch.zeros_like(maxes)
        for n, pos in enumerate(positions):
            if pos:
                maxes[:, n] = scores[:, pos].max(dim=1).values
                means[:, n] = scores[:, pos].mean(dim=1)
        best_score, best = maxes.max(dim=1)
        best_mean = means.gather(1, best[:, None])[:, 0]
        keep = (best_score > config.box_threshold) & (best_mean > config.text_threshold)
        for q in torch.nonzero(keep).flatten().tolist():
            cx, cy, w, h = boxes[i, q].tolist()
            box = (max(0.0, (cx - w / 2) * width), max(0.0, (cy - h / 2) * height),
                   min(float(width), (cx + w / 2) * width), min(float(height), (cy + h / 2) * height))
            if box[2] - box[0] >= 1 and box[3] - box[1] >= 1:
                found.append(Detection(names[int(best[q])], -1, float(best_score[q]), box))
        results.append(found)
    return results


def select(per_frame: list[list[Detection]], labels: list[str], config: GroundingConfig) -> list[Detection]:
    """Per label, the best keyframe and its ``max_instances`` best boxes; faces on those frames.

    Deterministic order: labels in query order, then score, best first (object ids follow it).
    """
    chosen: list[Detection] = []
    frames_used: set[int] = set()
    for label in labels:
        totals = [sum(d.score for d in found if d.label == label) for found in per_frame]
        if not totals or max(totals) <= 0:
            continue
        frame = int(np.argmax(totals))  # ties: the earliest keyframe
        best = sorted((d for d in per_frame[frame] if d.label == label), key=lambda d: -d.score)
        for d in best[:config.max_instances]:
            chosen.append(Detection(d.label, frame, d.score, d.box))
        frames_used.add(frame)
    for frame in sorted(frames_used):
        faces = sorted((d for d in per_frame[frame] if d.label == config.face_query), key=lambda d: -d.score)
        chosen.extend(Detection(d.label, frame, d.score, d.box, face=True) for d in faces[:config.max_faces])
    return chosen


DETECTION_TYPE = pa.list_(pa.struct([
    pa.field("label", pa.string()), pa.field("frame", pa.int32()), pa.field("score", pa.float32()),
    pa.field("box", pa.list_(pa.float32(), 4)), pa.field("face", pa.bool_())]))


def detections_to_arrow(per_clip: list[list[Detection]]) -> pa.Array:
    return pa.array([[{"label": d.label, "frame": d.frame, "score": d.score, "box": list(d.box), "face": d.face}
                      for d in found] for found in per_clip], DETECTION_TYPE)


def detections_from_row(value: list[dict] | None) -> list[Detection]:
    return [Detection(d["label"], int(d["frame"]), float(d["score"]), tuple(d["box"]), bool(d["face"]))
            for d in value or ()]


class Grounder:
    """Stage 2, step 2: boxes for every live clip (``DETECTIONS``), from its keyframes in ``FRAMES``.

    A Ray batch of clips is one or a few forward passes (all their keyframes, each with
    its clip's query). Keeps ``FRAMES`` for the steps after it; a clip that fails alone
    (``run_isolated``) becomes its error row.
    """

    def __init__(self, config: GroundingConfig, max_labels: int = 8, models: Any = None, device: str | None = None,
                 model: GroundingModel | None = None, extra_labels: Iterable[str] = ()):
        self.config, self.max_labels, self.extra_labels = config, max_labels, list(extra_labels)
        self.grounding = model or load("grounding", models, device=device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return run_isolated(batch, self._ground)

    def _ground(self, live: pa.Table) -> pa.Table:
        if FRAMES not in live.column_names:
            raise KeyError(f"the grounder needs the {FRAMES!r} column: put curation.frames.FrameReader "
                           "with grounding.keyframe_request(config) before it")
        images, queries, owners = [], [], []
        labels_per_clip = []
        for position, row in enumerate(live.select([c for c in ("subjects", LABELS, FRAMES)
                                                    if c in live.column_names]).to_pylist()):
            labels = clip_labels(row, self.max_labels, self.extra_labels)
            labels_per_clip.append(labels)
            if not labels:
                continue  # nothing to look for: the clip ends with no objects
            text, names, spans = query_of(labels, self.config.face_query)
            for image in decode_frames(row[FRAMES]).images:
                images.append(image)
                queries.append((names, spans, text))
                owners.append(position)
        found = detect(self.grounding, images, queries, self.config) if images else []
        per_clip: list[list[list[Detection]]] = [[] for _ in range(live.num_rows)]
        for position, dets in zip(owners, found):
            per_clip[position].append(dets)
        chosen = [select(frames, labels, self.config) for frames, labels in zip(per_clip, labels_per_clip)]
        return put_column(live, DETECTIONS, detections_to_arrow(chosen))


# ---------------------------------------------------------------------------
# Registry builders: the real checkpoint, and the same class from a tiny config.
# ---------------------------------------------------------------------------

def load_grounding(source: str, device: str, dtype: Any = None) -> GroundingModel:
    """GroundingDINO from a hub id or a local folder (bf16 on GPU, float32 on CPU)."""
    from transformers import AutoTokenizer, GroundingDinoForObjectDetection

    dtype = default_dtype(device, dtype)
    model = GroundingDinoForObjectDetection.from_pretrained(source, dtype=dtype).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(source)
    return GroundingModel(model, tokenizer, device, dtype)


# BERT's ids GroundingDINO hard-codes as phrase separators ([CLS], [SEP], ".", "?").
BERT_SPECIAL = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]", 1012: ".", 1029: "?"}
TINY_WORDS = ("man woman person child boy girl dog cat bird horse car bus bike ball cup bottle chair table "
              "phone bag hat human face red blue green square disc").split()


def tiny_tokenizer():
    """A WordPiece vocabulary with BERT's special ids where GroundingDINO expects them (offline)."""
    from transformers import BertTokenizerFast

    words = iter(TINY_WORDS)
    vocab = {}
    for index in range(1100):
        token = BERT_SPECIAL.get(index) or (next(words, None) if index >= 200 else None) or f"[unused{index}]"
        vocab[token] = index
    return BertTokenizerFast(vocab=vocab, do_lower_case=True)


def grounding_config(tiny: bool = True):
    """GroundingDINO configs: tiny (FACTS.md's working numbers) or the real base architecture."""
    from transformers import GroundingDinoConfig

    if not tiny:  # IDEA-Research/grounding-dino-base: Swin-B (384) + BERT-base, 900 queries
        return GroundingDinoConfig(backbone_config=dict(
            model_type="swin", embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12,
            image_size=384, out_indices=[2, 3, 4]))
    return GroundingDinoConfig(
        backbone_config=dict(model_type="swin", embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                             window_size=4, image_size=64, out_indices=[2, 3, 4]),
        text_config=dict(model_type="bert", vocab_size=1100, hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=64),
        num_queries=16, encoder_layers=1, decoder_layers=2, d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64,
        encoder_attention_heads=2, decoder_attention_heads=2, num_feature_levels=3, encoder_n_points=2,
        decoder_n_points=2, max_text_len=64)


def tiny_grounding(device: str) -> GroundingModel:
    """``GroundingDinoForObjectDetection`` from a small random config, fully offline."""
    import torch
    from transformers import GroundingDinoForObjectDetection

    torch.manual_seed(0)
    model = GroundingDinoForObjectDetection(grounding_config(tiny=True)).to(device).eval()
    return GroundingModel(model, tiny_tokenizer(), device, torch.float32, shortest=64, longest=128)
