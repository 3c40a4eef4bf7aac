"""Launchers (installed as ``mim.launchers``): where processes run; each calls ``train``."""
