"""Table schemas, record ids, validation and Parquet I/O. No torch, no ray, no models."""

from schemas.ids import clip_id, face_id, object_id, sample_id, video_id_of
from schemas.io import Location, list_parts, read_manifest, read_table, write_part, write_table
from schemas.tables import ERROR_COLUMNS, ERROR_MESSAGE, ERROR_TRACEBACK, ERROR_TYPE, KEPT, SCHEMAS, key_of, schema_for
from schemas.validate import SchemaError, validate

__all__ = [
    "ERROR_COLUMNS", "ERROR_MESSAGE", "ERROR_TRACEBACK", "ERROR_TYPE", "KEPT", "SCHEMAS", "Location",
    "SchemaError", "clip_id", "face_id", "key_of", "list_parts", "object_id", "read_manifest",
    "read_table", "sample_id", "schema_for", "validate", "video_id_of", "write_part", "write_table",
]
