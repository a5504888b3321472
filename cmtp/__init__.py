"""cmtp: build a C-MTP style Chinese embedding corpus with Apache Beam and train embedding models on it.

The installed import names live under ``cmtp.`` (``cmtp.schemas``, ``cmtp.transforms``, ``cmtp.trainer``,
``cmtp.pipelines``) while the code stays in the repository's top-level folders: pyproject's ``package-dir``
maps each one here, so installing cmtp adds one top-level name to site-packages.
"""
