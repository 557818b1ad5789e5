"""Simulators of the two relay destinations, following contract-connectors.md: Acteol
Atreemo's Toggle ingestion endpoint and Contlo's track API. Each keeps what it accepted in
arrival order (neither deduplicates), enforces its rate limit with 429 + Retry-After, and
takes the usual faults (status, latency, drop, drop_after_apply) through `/_sim/faults`.

They run inside `python -m sims` on their own ports (`--atreemo-port`, `--contlo-port`).
"""
