"""The rule-based safety filter (requests and responses), refusal detection, and data filtering.

Rules are regex categories in YAML (see `alignkit.safety.rules` for the format); the default rules
ship as `default_rules.yaml`.
"""

from alignkit.safety.classifier import Classifier
from alignkit.safety.data_filter import Drop, FilterReport, filter_file, filter_rows, unsafe_reason
from alignkit.safety.filter import Filtered, SafetyFilter, Verdict, filtered_responses, guard, load_filter, request_text
from alignkit.safety.refusal import is_refusal, refusal_phrase
from alignkit.safety.rules import DEFAULT_RULES_PATH, Category, Rules, load_rules, parse_rules

__all__ = [
    "DEFAULT_RULES_PATH", "Category", "Classifier", "Drop", "FilterReport", "Filtered", "Rules", "SafetyFilter", "Verdict",
    "filter_file", "filter_rows", "filtered_responses", "guard", "is_refusal", "load_filter", "load_rules",
    "parse_rules", "refusal_phrase", "request_text", "unsafe_reason",
]
