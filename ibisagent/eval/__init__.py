"""Evaluation: metrics (one module) and harnesses built on them."""
