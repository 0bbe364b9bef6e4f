"""Insight into trained runs: attribution and its report card, mismatch analysis and adaptation, architecture and run comparison."""
