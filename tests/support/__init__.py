"""Helpers shared by test modules: what more than one test module needs, grouped by subject.

Test modules import helpers from here only, never from ``tests.conftest`` (which holds the
pytest fixtures) nor from one another, so that each test module can be read, moved or deleted
on its own.
"""
