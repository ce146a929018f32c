"""Telemetry: what the device is and how much memory it has left, sampled in the background.

The capacity decisions need a fresh, trustworthy "free memory" number and the status call needs a
cheap one, so a :class:`~edged.telemetry.sampler.Sampler` keeps the last immutable
:class:`~edged.telemetry.snapshot.Snapshot` and can take a new one on demand. Every reader takes
an injectable root path so that Jetson-only files are tested from recorded fixture trees.

Nothing is imported here on purpose: ``jtop`` and ``pynvml`` are optional and heavy, and importing
the package must not cost the daemon's idle budget.
"""
