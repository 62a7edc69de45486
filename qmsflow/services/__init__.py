"""Application services: use cases over the domain and the records store, shared by CLI, flows and web."""
