"""Stage 4, global step: the same identity in other clips (``curation/pairs/cross_clip.py``).

    python pipelines/stage4b_cross_pairs.py --run-dir RUN [--set cross_clip.min_similarity=0.55]

Inputs are identities (``identity_id`` of faces with ``selected``); the ledger holds those
already paired, so a rerun after new clips arrive queries only the new identities against
all of them and adds only the pairs that involve a new clip. Identity centroids are
computed where the faces parts are read (Ray tasks, one per part); only the centroids
reach the driver, which builds the nearest-neighbour index and writes ``cross_pairs``:
``kept`` pairs (natural variants the samples use) and ``near_duplicate`` ones (the same
footage twice: recorded, not used).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import pyarrow as pa

from curation.envelope import empty_row, to_table
from curation.operator import setting
from curation.pairs.cross_clip import CrossClipConfig, centroids_from_sums, identity_sums, pair_new_identities
from pipelines.cli import cli
from pipelines.job import StageJob
from pipelines.ledger import commit
from pipelines.stages import STAGE
from schemas.io import Location, list_parts
from schemas.tables import CROSS_PAIRS

SUM_COLUMNS = ["identity_id", "clip_id", "embedding", "embedding_model", "selected"]


@dataclass
class CrossClipStageConfig:
    cross_clip: CrossClipConfig = field(default_factory=CrossClipConfig)
    commit_every: int = setting(10000, help="identities per committed part (the ledger's unit of progress)")


def part_sums(batch: pa.Table) -> pa.Table:
    """Ray task: the identity sums of the faces parts named in ``batch`` (selected faces only)."""
    import pyarrow.parquet as pq

    parts = []
    for uri in batch.column("part").to_pylist():
        loc = Location.of(uri)
        parts.append(identity_sums(pq.read_table(loc.path, filesystem=loc.fs, columns=SUM_COLUMNS,
                                                 filters=[("selected", "==", True)])))
    return pa.concat_tables(parts)


def main(argv: list[str] | None = None) -> int:
    job = StageJob(STAGE["cross_clip"], CrossClipStageConfig, __doc__, argv)
    cfg = job.config
    with job:
        todo = job.pending(job.read_input())  # identities not paired yet (first row of each)
        if todo.num_rows:
            faces = job.run.table("faces")
            parts = [{"part": Location(faces.fs, path).uri()} for path in list_parts(faces)]
            ds = job.dataset(pa.Table.from_pylist(parts), rows_per_block=1)
            sums = ds.map_batches(part_sums, batch_size=1, batch_format="pyarrow", num_cpus=0.5)
            centroids = centroids_from_sums(sums.iter_batches(batch_size=None, batch_format="pyarrow"))
            new_ids = sorted(set(todo.column("identity_id").to_pylist()))
            rows = pair_new_identities(centroids, new_ids, cfg.cross_clip)
            owned: dict[str, list[dict]] = {}
            for row in rows:
                owned.setdefault(row["_input"], []).append(row)
            for start in range(0, len(new_ids), cfg.commit_every):
                chunk = new_ids[start:start + cfg.commit_every]
                batch = [r for i in chunk for r in owned.get(i, [])] + [empty_row(i) for i in chunk if i not in owned]
                job.report.add(commit(to_table(batch, CROSS_PAIRS), job.run.root.uri(), job.stage.name,
                                      job.table).to_pylist()[0])
    return 0 if job.report.accounted else 1


if __name__ == "__main__":
    sys.exit(cli(main))
