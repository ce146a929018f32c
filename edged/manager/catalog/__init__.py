"""What is installed: the store, the manifests of the tiers, the catalog built from them, and
the checks and repairs of it. Never imports ``edged.manager.memory`` (an import-linter contract)."""
