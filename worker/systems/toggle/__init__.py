"""Toggle (gift cards): its GraphQL API, every contract assumption about it, nothing else."""
