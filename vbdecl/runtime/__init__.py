"""The sandbox runtime: spawn into namespaces, pid 1, sync protocol, events.

Modules here are on the hot path (``vbdecl run`` of a cached plan, ``vbdecl
exec``, ``vb``): they import only the standard library and ``vbdecl.sys``,
and nothing heavy after fork.
"""
