"""Domain rules of the QMS: plain Python and pydantic, no SQL, no Prefect, no HTTP.

Nothing in this package imports another qmsflow package.
"""
