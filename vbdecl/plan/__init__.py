"""The planner: normalized manifest -> action graph -> plan; diff against state.

Pure code (no I/O beyond reading manifests).
Submodules are imported explicitly; this package imports nothing.
"""
