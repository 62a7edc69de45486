"""Demo data: a small team's first weeks (seed) and ten years of a 50-system organisation (large).

Drivers of the services, like the CLI: the services never import them."""
