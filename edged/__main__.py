"""``python -m edged`` runs the daemon (same as the ``edged`` console script)."""

from edged.daemon import main

raise SystemExit(main())
