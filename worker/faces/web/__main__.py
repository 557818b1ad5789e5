"""`python -m worker.faces.web`: the web process (what `pointsync web` runs)."""

from worker.faces.web.app import main

main()
