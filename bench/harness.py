"""Timing, FLOP counting and the table: what every figure of the suite shares.

Only ratios count here (the machines are noisy and shared): the cases of one figure run in a
round robin, A B A B ... (A B C, C B A, ... for more cases), after a warm-up of each. A row's
figure is the median over the rounds of a ratio of two calls of the same round, so a slow
spell hits both sides of it alike; the medians of the times are printed beside it.
"""
from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class Row:
    """One line of the table: ``value`` (a ratio) against ``goal``."""

    figure: str
    value: float
    detail: str  # how the ratio was formed, with the medians behind it
    goal: float | None = None  # None: reported, no goal
    goal_text: str = ""

    @property
    def met(self) -> str:
        if self.goal is None:
            return "-"
        return "yes" if self.value >= self.goal else "NO"


@dataclass
class Settings:
    warmup: int = 1  # untimed calls of every case before the round robin
    rounds: int = 5  # timed calls of every case, alternating
    rounds_asked: bool = False  # --rounds given: heavy figures keep it instead of their own cap
    quick: bool = False  # tiny models: checks that the suite runs, says nothing about speed
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # the precisions the step figures time; bf16 only where the device computes it natively
    # (``precisions``), since an emulated bf16 step takes minutes and measures the emulation
    precisions: tuple[str, ...] = ("fp32", "bf16")


def precisions(device: torch.device, quick: bool, asked: str | None) -> tuple[tuple[str, ...], str]:
    """The precisions to time (``--precisions``: any of fp32, bf16, fp16; else fp32 and, where
    native, bf16), and a note
    on what was left out and why ("" if nothing)."""
    from mim.engine.precision import native_bf16

    if asked:
        chosen = tuple(p for p in asked.split(",") if p)
        unknown = sorted(set(chosen) - {"fp32", "bf16", "fp16"})
        if unknown or not chosen:
            raise ValueError(f"--precisions: {unknown[0] if unknown else asked!r} is not one "
                             "of: fp32, bf16, fp16")
        return chosen, ""
    native, why = native_bf16(device)
    if native or quick:
        return ("fp32", "bf16"), ""
    return ("fp32",), (f"bf16 figures left out: {why}, so bf16 is emulated (a ViT-B step took "
                       "226 s against 8 s in fp32 on an AVX2 Zen 3) and `mim train` trains in "
                       "fp32 here (train.precision=auto); --precisions fp32,bf16 times it anyway")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timings(dict):
    """Seconds per call of every case, one entry per round: ``t[name][i]``."""

    def median(self, name: str) -> float:
        return statistics.median(self[name])

    def ratio(self, num: str, den: str) -> float:
        """Median over the rounds of ``num``'s time / ``den``'s time in the same round: two
        calls seconds apart share the machine's load of the moment, which the medians of the
        two columns taken separately would not."""
        return statistics.median(a / b for a, b in zip(self[num], self[den]))


def round_robin(cases: dict[str, Callable[[], object]], settings: Settings,
                rounds: int | None = None, clock: Callable[[], float] = time.perf_counter
                ) -> Timings:
    """Every case called once per round, in turn (A B C, then C B A: a drift within a round
    favours no case), after a warm-up of each; returns the timings of every round, on ``clock``
    (wall-clock; ``time.process_time``: this process's CPU seconds, per core)."""
    rounds = rounds or settings.rounds
    for fn in cases.values():
        for _ in range(settings.warmup):
            fn()
    synchronize(settings.device)
    times = Timings({name: [] for name in cases})
    order = list(cases)
    for turn in range(rounds):
        for name in (order if turn % 2 == 0 else order[::-1]):
            start = clock()
            cases[name]()
            synchronize(settings.device)
            times[name].append(clock() - start)
    return times


def matmul_case(dtype: torch.dtype, device: torch.device, size: int = 2048,
                repeats: int = 4) -> tuple[Callable[[], None], float]:
    """A case that multiplies two ``size`` x ``size`` matrices ``repeats`` times, and its FLOPs:
    the practical matmul peak, timed in the same round robin as the step it is compared with."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)

    def run() -> None:
        for _ in range(repeats):
            torch.mm(a, b, out=out)

    return run, 2.0 * size ** 3 * repeats


def count_flops(fn: Callable[[], object]) -> float:
    """FLOPs of one call (matrix products and attention, forward and backward), as
    ``torch.utils.flop_counter`` counts them."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())


def machine() -> dict[str, str]:
    """What a table was measured on: recorded with every table in RESULTS.md."""
    info = {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
            "torch": torch.__version__, "threads": str(torch.get_num_threads()),
            "cpu": _cpu_name(), "cores": str(os.cpu_count()),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = str(torch.version.cuda)
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    lines = ["| figure | value | goal | met | measured |", "|---|---|---|---|---|"]
    for row in rows:
        goal = row.goal_text or (f">= {row.goal:g}" if row.goal is not None else "")
        lines.append(f"| {row.figure} | {row.value:.2f} | {goal} | {row.met} | {row.detail} |")
    return "\n".join(lines)


def seconds(value: float) -> str:
    return f"{value * 1e3:.0f} ms" if value < 1 else f"{value:.2f} s"
