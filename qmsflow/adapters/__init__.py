"""Adapters to the world outside the records store (git; Jira and Slack in later issues)."""
