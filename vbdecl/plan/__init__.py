"""The planner: normalized manifest -> action graph -> plan; diff against state.

Pure code (no I/O beyond reading manifests, state files and the plan cache).
Submodules are imported explicitly; this package imports nothing.
"""
