"""qmsflow: the quality management system of a team that builds high-risk AI, run as code."""

__version__ = "0.1.0"
