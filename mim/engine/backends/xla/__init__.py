"""``backend=xla``: ``backend`` (XLABackend: one XLA device, or SPMD data parallel / FSDP over
every device, on ``TorchStep``'s step) and ``sharding`` (the SPMD mesh, which axis of a weight to
split, a batch's partition specs).

Importing either imports no torch_xla: each does so inside the functions that need it.
"""
