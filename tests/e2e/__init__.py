"""End-to-end tests: the real ``mim`` CLI in subprocesses.

A package (``e2e.test_*``) so its module names cannot clash with same-named test files
elsewhere under ``tests/`` in pytest's default import mode.
"""
