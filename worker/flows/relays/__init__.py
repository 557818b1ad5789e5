"""Event relays: Toggle → Atreemo and Nector → Contlo, recorded before they are answered,
delivered once each in the order the source created them (receive, deliver, sweep)."""
