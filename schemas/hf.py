"""Our tables as Hugging Face ``datasets`` Parquet: PNG columns become ``Image`` features.

``datasets`` reads a Parquet file's ``huggingface`` schema metadata as its features, so
``load_dataset("parquet", data_files=...)`` gives decoded images for references,
variants and backgrounds with no loader script. An ``Image`` column is a struct
``{bytes, path}``; everything else keeps its Arrow type and maps to ``Value`` / ``List``.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc

IMAGE_COLUMNS = ("ref", "variant", "background", "image", "crop_png")  # PNG bytes in our schemas
IMAGE_TYPE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])

_DTYPES = {pa.string(): "string", pa.int64(): "int64", pa.int32(): "int32", pa.float32(): "float32",
           pa.float64(): "float64", pa.bool_(): "bool", pa.binary(): "binary"}


def _is_image(name: str, type_: pa.DataType) -> bool:
    return name in IMAGE_COLUMNS and pa.types.is_binary(type_)


def hf_type(name: str, type_: pa.DataType) -> pa.DataType:
    """The Arrow type a column has in the HF dataset (PNG bytes -> ``{bytes, path}``)."""
    if _is_image(name, type_):
        return IMAGE_TYPE
    if pa.types.is_list(type_) or pa.types.is_fixed_size_list(type_):
        inner = hf_type(name, type_.value_type)
        return pa.list_(inner, type_.list_size) if pa.types.is_fixed_size_list(type_) else pa.list_(inner)
    if pa.types.is_struct(type_):
        return pa.struct([pa.field(f.name, hf_type(f.name, f.type)) for f in type_])
    return type_


def hf_feature(name: str, type_: pa.DataType) -> dict:
    """The ``datasets`` feature dict of one column (``Features.to_dict`` format)."""
    if _is_image(name, type_):
        return {"_type": "Image"}
    if pa.types.is_list(type_) or pa.types.is_fixed_size_list(type_):
        feature = {"feature": hf_feature(name, type_.value_type), "_type": "List"}
        if pa.types.is_fixed_size_list(type_):
            feature["length"] = type_.list_size
        return feature
    if pa.types.is_struct(type_):
        return {f.name: hf_feature(f.name, f.type) for f in type_}
    if pa.types.is_timestamp(type_):
        return {"dtype": f"timestamp[{type_.unit}, tz={type_.tz}]" if type_.tz else f"timestamp[{type_.unit}]",
                "_type": "Value"}
    return {"dtype": _DTYPES.get(type_, str(type_)), "_type": "Value"}


def hf_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with image columns as ``Image`` structs and the ``huggingface`` features metadata."""
    fields = [pa.field(f.name, hf_type(f.name, f.type)) for f in schema]
    features = {f.name: hf_feature(f.name, f.type) for f in schema}
    return pa.schema(fields, metadata={"huggingface": json.dumps({"info": {"features": features}})})


def _convert(name: str, array: pa.Array, type_: pa.DataType) -> pa.Array:
    if _is_image(name, array.type):
        return pa.StructArray.from_arrays([array, pa.nulls(len(array), pa.string())], fields=list(IMAGE_TYPE),
                                          mask=array.is_null())
    if pa.types.is_list(array.type) or pa.types.is_fixed_size_list(array.type):
        values = _convert(name, array.flatten(), type_.value_type)
        if pa.types.is_fixed_size_list(array.type):
            return pa.FixedSizeListArray.from_arrays(values, array.type.list_size, mask=array.is_null())
        offsets = array.offsets if array.offset == 0 else pc.subtract(array.offsets, array.offsets[0])
        return pa.ListArray.from_arrays(offsets, values, mask=array.is_null())
    if pa.types.is_struct(array.type):
        children = [_convert(f.name, array.field(i), type_.field(i).type) for i, f in enumerate(array.type)]
        return pa.StructArray.from_arrays(children, fields=list(type_), mask=array.is_null())
    return array


def to_hf(table: pa.Table) -> pa.Table:
    """``table`` with PNG columns (also inside lists of structs) turned into ``Image`` structs."""
    schema = hf_schema(table.schema)
    arrays = [_convert(f.name, table.column(f.name).combine_chunks(), f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def dataset_card(name: str, rows: int, files: str, description: str) -> str:
    """A README.md dataset card: YAML front matter the Hub reads, then what the data is."""
    return (f"---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: {files}\n"
            f"tags:\n- video\n- subject-to-video\n- magref\n---\n\n# {name}\n\n{description}\n\n"
            f"{rows} samples. Load with `datasets.load_dataset(\"parquet\", data_files=\"{files}\")` "
            f"(or `load_dataset(\"<this folder>\")`); `faces[].ref`, `objects[].ref`, their `variant`s and "
            f"`background` decode as PIL images. Videos are referenced by `uri` and frame range "
            f"[`start_frame`, `end_frame`); `crop` (x, y, w, h; null = whole frame) is the part of "
            f"the frame that is the clip.\n")
