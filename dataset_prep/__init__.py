"""Converters that turn public multimodal-recommendation data into RecBole atomic files + features.

Run them from the repository root as modules, e.g. ``python -m dataset_prep.import_official --help``.
"""
