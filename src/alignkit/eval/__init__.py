"""Evaluation: automatic metrics (BLEU, chrF, ROUGE, perplexity), intervals, and (to come) judges,
win rates and the report."""
