"""A simulator of Toggle's GraphQL gift-card API, following contract-connectors.md
("Toggle GraphQL API") to the letter: real GraphQL parsed by graphql-core, the JWT login
with its sliding refresh, the cost-based throttle, seeded cards/products/sites, and faults.

Run alone with `python -m sims.toggle --port N`, or inside `python -m sims` (`--toggle-port`).
"""
