"""The transactional engine: state store, journal, locks, executor, recovery.

Heavy imports stay out of this package: the run path reads state through
:mod:`vbdecl.engine.paths` and :mod:`vbdecl.engine.store`.
"""
