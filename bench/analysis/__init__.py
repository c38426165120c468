"""Analysis of the inference CSVs of the stored runs: comparisons, alerts and their reports."""
