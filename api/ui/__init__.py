"""The operator page (`GET /ui`): its routes, static files and sessions."""
