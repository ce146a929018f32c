"""The Python client of edged: ``from edged.client import EdgedClient``."""

from edged.client.client import DaemonUnreachable, EdgedClient
from edged.client.target import Target, default_target, parse_target

__all__ = ["DaemonUnreachable", "EdgedClient", "Target", "default_target", "parse_target"]
