"""What the tests share: values, the in-process service, real processes, outcome checks.

Fixtures stay in `tests/conftest.py`; everything a test imports by name lives here.
"""
