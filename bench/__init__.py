"""trioxy's benchmark harness (``bench/run.py``) and its suites; see bench/README.md."""
