"""``python -m lmzoo.cli`` (what ``torchrun ... -m lmzoo.cli build`` runs)."""

from lmzoo.cli import main

main()
