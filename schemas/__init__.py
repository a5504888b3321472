"""Arrow schemas, row/table validation and the stage manifest: the contracts between cmtp's stages."""

from .datasets import (
    DEAD_LETTER,
    PAIR,
    PRETRAIN_TEXT,
    RAW_DOCUMENT,
    SCHEMA_VERSION,
    SCHEMAS,
    SCORED_PAIR,
    TRAINING_EXAMPLE,
    get_schema,
)
from .errors import CmtpError
from .manifest import Manifest, ManifestError
from .validate import SchemaValidationError, rows_to_table, validate_row, validate_rows, validate_table

__all__ = [
    "DEAD_LETTER",
    "PAIR",
    "PRETRAIN_TEXT",
    "RAW_DOCUMENT",
    "SCHEMA_VERSION",
    "SCHEMAS",
    "SCORED_PAIR",
    "TRAINING_EXAMPLE",
    "CmtpError",
    "Manifest",
    "ManifestError",
    "SchemaValidationError",
    "get_schema",
    "rows_to_table",
    "validate_row",
    "validate_rows",
    "validate_table",
]
