"""``edgectl``: the operator's command line; every command is one call of ``edged.client``."""
