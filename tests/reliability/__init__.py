"""Reliability suite: fault injection, hostile input and load (README "What mim guarantees").

A package (``reliability.test_*``) so its module names cannot clash with test files elsewhere.
"""
