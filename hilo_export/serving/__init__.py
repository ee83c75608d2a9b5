"""Serving built engine folders: the Triton routing logic (router.py) and its BLS glue (model.py)."""
