"""explore: train, compare and explain chest X-ray classifiers.

The library behind the Streamlit app. It never imports Streamlit: every figure and table
a page shows comes from a plain function here that a test or the CLI can call.
"""
__version__ = "0.1.0"
