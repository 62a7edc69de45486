"""Fake external services (real HTTP on 127.0.0.1) for tests that drive the real client libraries."""
