"""``python -m meshchat`` runs the ``meshchat`` command."""

from meshchat.cli import main

main(prog_name="meshchat")
