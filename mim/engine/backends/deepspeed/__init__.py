"""``backend=deepspeed``: ``backend`` (DeepSpeedBackend, the contract on DeepSpeed's engine),
``wrapping`` (the model as the engine sees it), ``layout`` (DeepSpeed's checkpoint folder: file
names, rank files, the tag, the stage), ``universal`` (re-sharding through DeepSpeed's universal
checkpoint), ``from_torch`` and ``to_torch`` (resuming across ``backend=torch``).

Importing any of them imports no DeepSpeed: each does so inside the functions that need it.
"""
