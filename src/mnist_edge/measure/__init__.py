"""Measuring models (torch): accuracy and its report, robustness to shifted digits, and the latency benchmark."""
