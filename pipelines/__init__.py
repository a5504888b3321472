"""Runnable cmtp pipelines (Apache Beam) and the ``cmtp`` command line."""
