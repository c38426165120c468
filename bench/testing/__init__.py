"""Test doubles of the services the pipeline talks to, real enough to be met over HTTP.

Used by the test suite and the benchmark suite; they need the ``test`` extras (moto).
"""
