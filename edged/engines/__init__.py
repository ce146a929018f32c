"""Engines: backends behind one interface (``base``), run in worker processes (``workers``).

Nothing is imported here on purpose: the daemon imports ``edged.engines.base`` and
``edged.engines.workers`` only, and a backend module is imported when a model of its format is
first inspected or opened (see ``base.get_backend``).
"""
