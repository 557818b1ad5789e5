"""Contlo (marketing): its track API, the mapping from Nector's webhooks onto it, and every
contract assumption about it, nothing else."""
