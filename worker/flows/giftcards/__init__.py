"""Gift cards through Toggle: issue a card, turn points into one, till operations."""
