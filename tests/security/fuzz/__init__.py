"""The fuzz targets (``fuzz_edge.py``) and their committed corpus (``corpus/``)."""
