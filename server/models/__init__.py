"""The domain's numbers: estimators, prediction, solvers, training and scoring, in pure
NumPy; no transport is imported here.
"""
