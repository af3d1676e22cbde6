"""Object labels for a clip (MAGREF Appendix B.2: "candidate object labels from the captions").

Stage 1 already asks Qwen2.5-VL for the clip's subjects with its caption (the
``subjects`` column), so most clips need no second model call: their subject words
are normalised here (lower case, no article, singular, de-duplicated, at most
``max_labels``) and become GroundingDINO's query. People stay labels ("man",
"woman"): the model's subject disentanglement needs the caption's words for them.
Singulars come from ``curation.words`` (the ``inflect`` library: "women" -> "woman").

For clips whose subject list is empty, an optional text-only Qwen2.5-VL pass
(``labels.from_caption``) reads the caption and answers with a JSON list of the
concrete, visible, segmentable things it names. An answer that is not such a list is
that clip's error (``MalformedLabelAnswer``, naming the clip), never a crashed job.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable

import pyarrow as pa

from curation.clips.caption import chat_prompt
from curation.envelope import put_column, run_isolated, settle_failures
from curation.models import load
from curation.operator import ActorPool, setting
from curation.words import singular
from schemas.tables import INPUT

LABELS = "_labels"  # private column: the clip's normalised labels, set by ``Labeler``

LABEL_PROMPT = (
    "Here is the description of a video clip:\n\n{caption}\n\n"
    "List the concrete, visible things it names that could be cut out of a frame as a picture: people, "
    "animals and objects (not places, actions, colours, body parts or ideas). Answer with only a JSON "
    "array of at most {max_labels} short lowercase nouns, e.g. [\"woman\", \"dog\", \"red car\"]; "
    "answer [] if there are none."
)

# Words that name no segmentable thing (a caption's "Subjects:" line sometimes holds them).
NOT_THINGS = frozenset({"background", "scene", "video", "clip", "camera", "image", "frame", "view", "shot",
                        "footage", "picture", "setting", "environment", "atmosphere", "light", "lighting"})
_WORD = re.compile(r"^[a-z][a-z' -]*[a-z]$|^[a-z]$")


class MalformedLabelAnswer(ValueError):
    """The label model's answer for a clip is not a JSON list of names."""


@dataclass
class LabelsConfig:
    max_labels: int = setting(8, help="GroundingDINO's query holds every label of a clip (+ \"human face\")")
    from_caption: bool = setting(False, help=
        "ask Qwen2.5-VL (the captioner role), text only, for clips with no subjects")
    extra: list[str] = setting(factory=list, help=
        "looked for in every clip after its own labels (a corpus's known things)")
    max_new_tokens: int = setting(64, help="answer length cap (greedy decoding)")
    prompt: str = setting(LABEL_PROMPT, help="the instruction; {caption} and {max_labels} are filled in")
    pool: ActorPool = setting(factory=lambda: ActorPool(actors=1, batch_size=8, num_cpus=0.5, num_gpus=1.0), help=
        "batch_size = captions per generate call; one GPU per actor when the job uses GPUs (--gpus)")

    def __post_init__(self) -> None:
        if min(self.max_labels, self.max_new_tokens) < 1:
            raise ValueError("labels.max_labels and max_new_tokens must be >= 1")


def normalise_label(text: str) -> str | None:
    """One label in GroundingDINO's form: lower case, no article, last word singular; None if no thing."""
    text = re.sub(r"\s+", " ", str(text).strip().strip(" \t.,;:*_`\"'()[]{}").lower())
    text = re.sub(r"^(a|an|the|some|two|three|several|many)\s+", "", text)
    if not text or not _WORD.match(text) or len(text.split()) > 3 or len(text) > 40:
        return None
    words = text.split()
    words[-1] = singular(words[-1])
    label = " ".join(words)
    return None if label in NOT_THINGS else label


def normalise_labels(words: Iterable[Any] | None, limit: int) -> list[str]:
    """Normalised, de-duplicated labels in their first order, at most ``limit``."""
    out: list[str] = []
    for word in words or ():
        label = normalise_label(word) if word is not None else None
        if label and label not in out:
            out.append(label)
    return out[:limit]


def parse_label_answer(text: str, clip: str) -> list[str]:
    """The names in the model's answer: a JSON array of strings, maybe inside a code fence.

    Raises ``MalformedLabelAnswer`` naming ``clip`` for anything else.
    """
    body = re.sub(r"^```(?:json)?|```$", "", (text or "").strip(), flags=re.MULTILINE).strip()
    start, end = body.find("["), body.rfind("]")
    try:
        if start < 0 or end < start:
            raise ValueError("no JSON array")
        value = json.loads(body[start:end + 1])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ValueError("not an array of strings")
    except ValueError as err:
        raise MalformedLabelAnswer(
            f"clip {clip}: the label model's answer is not a JSON list of names ({err}): {(text or '')[:160]!r}") from None
    return value


def clip_labels(row: dict[str, Any], limit: int, extra: Iterable[str] = ()) -> list[str]:
    """The labels a clip row carries (the label pass's, else its normalised ``subjects``),
    then ``extra`` ones it does not have yet, at most ``limit`` in all."""
    own = list(row[LABELS]) if row.get(LABELS) is not None else normalise_labels(row.get("subjects"), limit)
    return normalise_labels([*own, *extra], limit)


class Labeler:
    """Stage 2, optional step: labels from the caption for clips whose ``subjects`` is empty.

    Every live row gets ``LABELS``; only empty-subject clips with a caption cost a model
    call, one ``generate`` per Ray batch. Uses the ``captioner`` role
    (Qwen2.5-VL), the model stage 1 captioned with.
    """

    def __init__(self, config: LabelsConfig, models: Any = None, device: str | None = None, model: Any = None):
        self.config = config
        self.captioner = model or load("captioner", models, device=device)
        self.generate_calls = 0

    def __call__(self, batch: pa.Table) -> pa.Table:
        malformed: dict[str, BaseException] = {}

        def label(live: pa.Table) -> pa.Table:
            for input_id in live.column(INPUT).to_pylist():  # a retry of this input starts afresh
                malformed.pop(input_id, None)
            return put_column(live, LABELS, pa.array(self._labels(live, malformed), pa.list_(pa.string())))

        # A failing generate call is retried clip by clip (run_isolated); a clip whose answer
        # does not parse is that clip's error row.
        return settle_failures(run_isolated(batch, label), malformed)

    def _labels(self, live: pa.Table, malformed: dict[str, BaseException]) -> list[list[str] | None]:
        limit = self.config.max_labels
        rows = live.select([c for c in (INPUT, "clip_id", "subjects", "caption") if c in live.column_names]).to_pylist()
        labels = [normalise_labels(row.get("subjects"), limit) for row in rows]
        ask = [i for i, row in enumerate(rows) if not labels[i] and (row.get("caption") or "").strip()]
        if ask:  # one generate call per Ray batch (labels.pool.batch_size captions at most)
            for i, answer in zip(ask, self.generate([rows[i]["caption"] for i in ask])):
                try:
                    labels[i] = normalise_labels(parse_label_answer(answer, rows[i]["clip_id"]), limit)
                except MalformedLabelAnswer as err:
                    malformed[rows[i][INPUT]] = err
        return labels

    def generate(self, captions: list[str]) -> list[str]:
        """One text-only ``generate`` call (greedy, left padding) for several captions."""
        import torch

        c = self.captioner
        self.generate_calls += 1
        prompts = [self.config.prompt.format(caption=cap.strip(), max_labels=self.config.max_labels) for cap in captions]
        texts = [chat_prompt(c.tokenizer, prompt) for prompt in prompts]
        inputs = c.tokenizer(texts, padding=True, return_tensors="pt").to(c.device)
        with torch.inference_mode():
            out = c.model.generate(**inputs, max_new_tokens=self.config.max_new_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1]:]
        return [t.strip() for t in c.tokenizer.batch_decode(new, skip_special_tokens=True)]
