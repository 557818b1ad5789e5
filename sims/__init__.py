"""HTTP simulators of Treazure (point master) and Voyado Engage (point follower).

One aiohttp process serves both APIs on two ports over one shared in-memory state, plus a
`/_sim/` control API on both ports for seeding, fault injection, statistics and checks.
Start it with `python -m sims` or `sims.server.run`.
"""
