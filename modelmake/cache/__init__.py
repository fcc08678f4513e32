"""The shared remote cache: task outputs stored by content over any fsspec URL (``store.py``)."""
