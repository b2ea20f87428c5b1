"""Data: formats, chat templates, response-only tokenisation, packing, validation and dedupe.

Imports nothing heavier than torch, so data code tests in milliseconds.
"""

from alignkit.data.collate import collate
from alignkit.data.formats import Sample, detect_format, to_sample
from alignkit.data.packing import PackedRow, pack_examples, packing_is_exact
from alignkit.data.quality import DataReport
from alignkit.data.records import Record, read_records
from alignkit.data.sft import SFTData, build_sft_data
from alignkit.data.templates import DEFAULT_CHAT_TEMPLATE, ensure_chat_template, render
from alignkit.data.tokenize import IGNORE_INDEX, Example, tokenize_sample

__all__ = [
    "DEFAULT_CHAT_TEMPLATE", "IGNORE_INDEX", "DataReport", "Example", "PackedRow", "Record", "SFTData",
    "Sample", "build_sft_data", "collate", "detect_format", "ensure_chat_template", "pack_examples",
    "packing_is_exact", "read_records", "render", "tokenize_sample", "to_sample",
]
