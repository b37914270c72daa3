"""Kept so that the original ``python setup.py install`` still works; the metadata is in pyproject.toml."""

from setuptools import setup

setup()
