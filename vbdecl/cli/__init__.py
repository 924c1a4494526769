"""Front ends: the ``vbdecl`` command (argparse + rich) and ``vb`` (bubblewrap's command line)."""
