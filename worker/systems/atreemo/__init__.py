"""Acteol Atreemo (CRM): ingests Toggle's events at its own URL. Every assumption about it
(the contract marks all of them [assumed]) lives here, nothing else."""
