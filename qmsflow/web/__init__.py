"""The qmsflow web app (FastAPI): Slack interactivity, the approvals API, later the dashboard."""
