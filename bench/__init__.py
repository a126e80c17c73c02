"""The scheduledbot-operator benchmark: `python -m bench` (quick) or `python -m bench --full`.

See docs/benchmarks.md for what it measures, how, and the figures of the last full run.
"""
