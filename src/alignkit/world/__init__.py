"""The embedded demo world: instruction tasks with exact checkers, a safety family, an oracle and
a simulated annotator, and the data sets the stages read. Pure Python; no model needed."""

from alignkit.world.generate import SPLITS, sample_items, sft_rows, unique_prompts
from alignkit.world.oracle import annotate_ranking, correct, grade, score, win_rate
from alignkit.world.tasks import FAMILIES, Item

__all__ = ["FAMILIES", "Item", "SPLITS", "annotate_ranking", "correct", "grade", "sample_items", "score",
           "sft_rows", "unique_prompts", "win_rate"]
