"""Figure 11: cores per accelerator, the CPU cores of loader workers one training step consumes.

MAE's encoder sees a quarter of the tokens, so a step eats images several times faster than a
supervised one and pretraining is known to be input-bound. The step's rate is figure 1's (MAE
ViT-B/16 at 224 px, mask 0.75, ``Trainer.train_step`` in the default precision, images per
second of wall-clock on the device of the run; a GPU gets batch 64); the loader's is figure 8's
item (``ImageFolder.load`` on ImageNet-sized JPEGs with one torch thread, as one worker runs
it). Both are timed in one round robin, so their ratio, the number of cores whose workers keep
the step fed, comes from the same minutes of the machine.

On a CPU the step runs on the very cores the loader would use: the figure then says how many
cores a device as fast as this CPU would need, not that this CPU is input-bound (the caveat is
in the row). On CUDA a second row decodes the same JPEGs on the GPU (``torchvision.io.
decode_jpeg`` with ``device="cuda"``, one batched call) and crops and resizes them there: its
images/s over the step's is how many steps' worth of images the GPU decodes in a step's time.
"""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from bench import pipeline, steps
from bench.harness import Row, Settings, round_robin
from bench.image import batch_for, config, masks
from mim.config.schema import TrainConfig
from mim.engine import precision as precisions


def _loader(paths, size: int, count: int):
    """``count`` loader items on one torch thread (a worker's), the threads restored after."""
    items = pipeline._ours(paths, size, count)

    def run() -> None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            items()
        finally:
            torch.set_num_threads(threads)

    return run


def _gpu_decode(paths, size: int, device: torch.device):
    """Decode every file on the GPU in one batched call, then MAE's crop of each, resized
    there, normalised: [N, 3, size, size] float on ``device``."""
    from torchvision.io import decode_jpeg

    from mim.modalities.image.config import IMAGENET_MEAN, IMAGENET_STD
    from mim.modalities.image.transforms import crop_box

    data = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8)  # [bytes], host
            for p in paths]
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    rng = random.Random(0)

    def run() -> None:
        images = decode_jpeg(data, device=device)  # list of uint8 [3, H, W] on the GPU
        crops = []
        for image in images:
            left, top, right, bottom = crop_box(image.shape[2], image.shape[1], (0.2, 1.0),
                                                (3 / 4, 4 / 3), rng)
            region = image[None, :, top:bottom, left:right].float()  # [1, 3, h, w]
            crops.append(F.interpolate(region, size=(size, size), mode="bicubic",
                                       antialias=True))
        x = torch.cat(crops).div_(255.0).sub_(mean).div_(std)  # [N, 3, size, size]
        assert x.shape == (len(data), 3, size, size)

    return run


def run(settings: Settings) -> list[Row]:
    device = settings.device
    cfg, size, batch = config(settings.quick)
    batch = batch_for(device, settings.quick) or batch
    precision, _ = precisions.resolve(TrainConfig().precision, precisions.native_bf16(device))
    x = torch.randn(batch, 3, size, size, device=device)
    step = steps.ours(cfg, x, masks((size // cfg.patch_size,) * 2, batch), precision)
    files, count = ((500, 375, 2), 2) if settings.quick else ((500, 375, 8), 32)
    paths = pipeline.jpegs(*files)
    cases = {"step": step.run, "loader": _loader(paths, size, count)}
    if device.type == "cuda":
        cases["gpu decode"] = _gpu_decode(paths * (count // len(paths)), size, device)
    t = round_robin(cases, settings)
    step_rate = batch / t.median("step")
    loader_rate = count / t.median("loader")
    where = "CPU: the step uses these same cores" if device.type == "cpu" else str(
        torch.cuda.get_device_name(device) if device.type == "cuda" else device)
    label = f"ViT-B/16 {size}px, mask 0.75, {precision}, batch {batch}"
    rows = [Row(f"11. cores per accelerator: the step's images/s over one loader core's "
                f"({label}; ImageNet-sized JPEGs; {where})", step_rate / loader_rate,
                f"step {step_rate:.1f} images/s; loader {loader_rate:.1f} images/s per core")]
    if "gpu decode" in cases:
        decode_rate = count / t.median("gpu decode")
        rows.append(Row(f"11. GPU JPEG decode + crop images/s over the step's ({label}; "
                        f"torchvision.io.decode_jpeg on {where})", decode_rate / step_rate,
                        f"decode {decode_rate:.0f} images/s; step {step_rate:.1f} images/s"))
    return rows
