"""Dense evaluation: ``mim eval segment`` (heads.py, protocol.py, sliding.py, metrics.py)."""
