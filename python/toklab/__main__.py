"""``python -m toklab`` runs the command line."""

from toklab.cli import main

main()
