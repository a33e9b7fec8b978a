"""Results, summaries and reports."""
