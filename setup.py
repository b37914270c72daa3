"""Kept so that the original ``python setup.py install`` still works.

The metadata is in pyproject.toml.
"""

from setuptools import setup

setup()
