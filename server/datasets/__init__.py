"""The embedded default: demo datasets shipped with the package, the demo models trained
from them, and CSV reading.
"""
