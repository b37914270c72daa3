"""The backends' tests: a package, so that its conftest is not the module named ``conftest``."""
