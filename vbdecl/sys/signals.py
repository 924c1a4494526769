"""The signal module's functions and constants, without its enum wrappers.

``import signal`` costs every start-up ~4.5 ms on this kind of machine: it
builds ``Signals``/``Handlers``/``Sigmasks`` IntEnums, which imports enum,
functools and collections. Its C core ``_signal`` has the same functions
and constants and returns plain ints, which is all the runtime needs. The
run, exec and vb paths import this module instead of ``signal``.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from signal import *  # noqa: F403 - the same names, with their types
else:
    try:
        from _signal import *  # noqa: F403
    except ImportError:   # an implementation without CPython's _signal
        from signal import *  # noqa: F403
