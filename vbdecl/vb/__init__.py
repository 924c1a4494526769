"""The bubblewrap-compatible front end: bwrap's command line -> a normalized document."""
