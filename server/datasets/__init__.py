"""The embedded default: demo datasets shipped with the package, the demo models trained
from them, and the streaming readers of CSV and Parquet files that ``regserve train`` uses.
"""
