"""Nector: what it sends us (its signed webhooks)."""
