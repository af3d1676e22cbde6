"""Whole-input grouping survives Ray joining blocks whose columns differ (a block of error rows only)."""

from __future__ import annotations

import pyarrow as pa

from curation.envelope import group_inputs, ungroup_inputs
from schemas.tables import INPUT


def test_ungroup_restores_rows_of_blocks_that_lacked_a_column():
    faces = group_inputs(pa.table({INPUT: ["a", "a", "b"], "status": ["kept", "pose", "kept"],
                                   "segment": ["clip", "before", "clip"]}))
    errors = group_inputs(pa.table({INPUT: ["c"], "status": ["_error"]}))  # no "segment" column at all
    joined = pa.concat_tables([faces, errors], promote_options="permissive")  # what Ray's batching does
    assert joined.column("segment").null_count == 1  # a null list, not a list of one null
    flat = ungroup_inputs(joined)
    assert flat.column(INPUT).to_pylist() == ["a", "a", "b", "c"]
    assert flat.column("segment").to_pylist() == ["clip", "before", "clip", None]
    assert flat.column("status").to_pylist() == ["kept", "pose", "kept", "_error"]
