"""Evaluation: metrics, benchmarks (unseen / seen / raie / t2i) and reports."""
