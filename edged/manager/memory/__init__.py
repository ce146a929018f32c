"""What is loaded: the capacity planner, the residency of loaded models, the preloading policy
and the preloader. Never imports ``edged.manager.catalog`` (an import-linter contract)."""
