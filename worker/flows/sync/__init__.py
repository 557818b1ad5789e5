"""Flow 1: the balance sync, Treazure → Engage (window, lanes, run, heal push)."""
