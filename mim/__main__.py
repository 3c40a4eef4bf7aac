"""``python -m mim`` is the same as the ``mim`` command."""
from mim.cli import command

command()
