"""Who is who in a clip: faces grouped into identities by their embeddings (Appendix B.3).

"This embedding is used for identity assignment, allowing us to differentiate between
different faces within the same or across clips." Within one clip:

1. The *clip's own usable faces* (inside the clip's frames, passing every filter) are
   clustered by agglomerative clustering with average linkage on cosine distance, cut
   at ``1 - min_similarity``: deterministic (no random init, no order dependence
   beyond ties), no number of people to guess, and average linkage does not chain two
   people together through one ambiguous face the way single linkage does.
2. Every other face (filtered faces, and all faces of the neighbouring segments) joins
   the identity whose members it is most similar to on average, if that similarity
   reaches ``min_similarity``; otherwise it joins none. Neighbour faces therefore only
   *join* identities present in the clip and never found one: the next shot may show
   someone else.
3. Identities are numbered per clip: most faces first, then earliest face.
"""

from __future__ import annotations

import numpy as np

NO_IDENTITY = -1


def normalise(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (cosine similarity becomes a dot product)."""
    vectors = np.asarray(embeddings, np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if (norms == 0).any() or not np.isfinite(vectors).all():
        raise ValueError("a face embedding is zero or not finite; the recognizer output is unusable")
    return vectors / norms


def cluster(embeddings: np.ndarray, min_similarity: float) -> np.ndarray:
    """Labels 0..k-1 (numbered by first appearance) from average-linkage clustering on cosine distance."""
    count = len(embeddings)
    if count == 0:
        return np.zeros(0, np.int64)
    if count == 1:
        return np.zeros(1, np.int64)
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    unit = normalise(embeddings)
    distances = np.clip(pdist(unit, metric="cosine"), 0.0, 2.0)
    tree = linkage(distances, method="average")
    raw = fcluster(tree, t=1.0 - min_similarity, criterion="distance")
    first_seen: dict[int, int] = {}
    for label in raw:
        first_seen.setdefault(int(label), len(first_seen))
    return np.array([first_seen[int(label)] for label in raw], np.int64)


def assign_identities(embeddings: np.ndarray, founders: np.ndarray, min_similarity: float) -> np.ndarray:
    """An identity number per face (``NO_IDENTITY`` for none).

    ``founders`` marks the faces that may found identities (the clip's own usable
    faces); the rest may only join one. Faces are in their deterministic row order
    (frame, then position), which fixes "earliest" for numbering.
    """
    embeddings = np.asarray(embeddings)
    founders = np.asarray(founders, bool)
    labels = np.full(len(embeddings), NO_IDENTITY, np.int64)
    if not founders.any():
        return labels
    unit = normalise(embeddings)
    founder_rows = np.flatnonzero(founders)
    labels[founder_rows] = cluster(unit[founder_rows], min_similarity)
    others = np.flatnonzero(~founders)
    if len(others):
        count = int(labels[founder_rows].max()) + 1
        similarity = unit[others] @ unit[founder_rows].T  # (others, founders)
        mean = np.stack([similarity[:, labels[founder_rows] == k].mean(axis=1) for k in range(count)], axis=1)
        best = mean.argmax(axis=1)
        joined = mean[np.arange(len(others)), best] >= min_similarity
        labels[others[joined]] = best[joined]
    return renumber(labels, founders)


def renumber(labels: np.ndarray, founders: np.ndarray) -> np.ndarray:
    """Identities renumbered by founding faces, most first; ties by earliest face."""
    labels = np.asarray(labels)
    present = sorted({int(k) for k in labels[founders]})
    order = sorted(present, key=lambda k: (-int(np.sum(labels[founders] == k)), int(np.flatnonzero(labels == k)[0])))
    mapping = {old: new for new, old in enumerate(order)}
    return np.array([mapping.get(int(k), NO_IDENTITY) for k in labels], np.int64)
