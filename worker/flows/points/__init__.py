"""Flow 2: point transactions, booked in Treazure exactly once, then set in Engage."""
