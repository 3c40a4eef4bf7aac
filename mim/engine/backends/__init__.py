"""The backends: what runs the optimisation step for the training loop, one module each.

- ``base``: the contract, ``Backend`` (also importable as ``mim.engine.backends.Backend``), with
  the precision and distributed facts every backend shares; ``local_device``, ``STATE_FILE``.
- ``torch``: ``backend=torch``, plain PyTorch (one process or DDP); ``TorchStep``, the step and
  ``state.pt`` checkpoint that ``backend=xla`` shares.
- ``deepspeed/``: ``backend=deepspeed`` (ZeRO 0-3): ``backend`` maps the contract onto
  DeepSpeed's engine, ``wrapping`` the model as the engine sees it, ``layout`` the one reader of
  DeepSpeed's checkpoint folder, ``universal`` the re-shard through DeepSpeed's universal
  checkpoint, ``from_torch`` and ``to_torch`` the interchange with ``backend=torch``.
- ``xla/``: ``backend=xla`` (torch_xla): ``backend`` one device or SPMD, ``sharding`` the mesh
  and partition specs.

DeepSpeed and torch_xla are imported inside the functions that use them, never when a module
here is imported: the core imports, and ``mim plugins`` lists every backend, where they are
missing. ``mim/builtins.py`` imports the three backend modules, which register their names.
"""
from mim.engine.backends.base import Backend

__all__ = ["Backend"]
