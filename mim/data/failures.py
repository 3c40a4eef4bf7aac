"""Why data stopped a run, said in one line: the error, the unreadable items counted by reason,
and what to do about them.

Data stops a run in three ways, each a ``DataLoadError`` whose text is the one line ``mim train``
prints (exit status 1):

- no readable item among all of a dataset's (or ``MimDataset.max_consecutive_failures``
  consecutive) items (``none_readable``, raised by ``MimDataset``; in a loader worker, torch
  re-raises it with the worker's traceback, which ``data_stop`` strips again);
- more than ``train.max_unreadable`` of the items read so far were unreadable (``too_many``);
- a loader worker died or stalled (``data_stop``, from the DataLoader's own message).

The items arrive as ``(path, reason)`` pairs; an item that says what ``kind`` of problem it is
and its ``remedy`` (``mim.data.Skipped``, from ``UnreadableSample``) is counted under that kind,
any other under its reason. Knows no modality: the kinds and remedies come from the datasets.
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Iterable, Sequence

log = logging.getLogger("mim")

MIN_ITEMS_JUDGED = 50  # items read before train.max_unreadable is judged (one batch is noise)
PADDED_LOGGED = 5  # padded items named in the log; all are counted
FIX_FILES = "remove or replace the unreadable files (train.log names each one and why)"


class DataLoadError(RuntimeError):
    """The data cannot feed the run: a loader worker died or stalled, or too much is unreadable.

    Its text is one line (``mim train`` prints it as the run's error)."""


def by_reason(items: Iterable[Sequence[str]]) -> str:
    """``(path, reason)`` items (each path once) -> "4 too short (...), 2 not a video, 1 empty",
    the most frequent first."""
    kinds: Counter[str] = Counter()
    seen: set[str] = set()
    for item in items:
        if item[0] not in seen:
            seen.add(item[0])
            kinds[getattr(item, "kind", None) or item[1]] += 1
    return ", ".join(f"{count} {kind}" for kind, count in
                     sorted(kinds.items(), key=lambda pair: (-pair[1], pair[0])))


def remedies(items: Iterable[Sequence[str]]) -> str:
    """What to do about ``items``: each kind's own remedy once, then ``FIX_FILES`` for the
    kinds that have none."""
    own: list[str] = []
    others = False
    for item in items:
        remedy = getattr(item, "remedy", None)
        if remedy is None:
            others = True
        elif remedy not in own:
            own.append(remedy)
    return "; ".join(own + ([FIX_FILES] if others or not own else []))


def none_readable(items: Sequence[Sequence[str]], total: int) -> DataLoadError:
    """No item of ``items`` (the consecutive ones tried, ``total`` items in the dataset) could
    be used."""
    for path, reason in items:  # the loop never sees these: train.log names them here
        log.warning("skipped unreadable item %s: %s", path, reason)
    what = (f"none of the {total} items" if len(items) >= total
            else f"none of {len(items)} consecutive items (of {total})")
    return DataLoadError(f"data: {what} could be read: {by_reason(items)}; {remedies(items)}")


def too_many(unreadable: dict[str, Sequence[str]], skipped: int, attempts: int,
             limit: float) -> DataLoadError:
    """More than ``limit`` of ``attempts`` items read were unreadable (``skipped`` of them;
    ``unreadable``: the distinct items seen here, by path)."""
    items = list(unreadable.values())
    return DataLoadError(
        f"data: {skipped} of the {attempts} items read so far were unreadable (more than "
        f"train.max_unreadable={limit:g} of them): {by_reason(items)}; {remedies(items)}, "
        "or raise train.max_unreadable")


class ItemReports:
    """The training loop's account of its unreadable and padded items: each unreadable file
    logged once (every occurrence is counted by the loop), the first ``PADDED_LOGGED`` padded
    ones, and the stop when more than ``train.max_unreadable`` of the items are unreadable."""

    def __init__(self) -> None:
        self.unreadable: dict[str, Sequence[str]] = {}  # path -> its first report
        self.padded = 0  # padded items seen here

    def tell(self, skipped: Sequence[Sequence[str]], padded: Sequence[Sequence[str]]) -> None:
        for item in skipped:
            path, reason = item
            if path not in self.unreadable:
                self.unreadable[path] = item
                log.warning("skipped unreadable item %s: %s", path, reason)
        for path, how in padded:
            self.padded += 1
            if self.padded <= PADDED_LOGGED:
                log.warning("padded item %s: %s%s", path, how,
                            "; further ones are only counted (padded in metrics.jsonl)"
                            if self.padded == PADDED_LOGGED else "")

    def judge(self, skipped: int, attempts: int, limit: float) -> None:
        """Raises ``too_many`` once ``MIN_ITEMS_JUDGED`` items were tried and more than
        ``limit`` of them (``skipped``, all ranks) were unreadable."""
        if attempts >= MIN_ITEMS_JUDGED and skipped > limit * attempts:
            raise too_many(self.unreadable, skipped, attempts, limit)


def _raised_in_the_loader(exc: BaseException) -> bool:
    """Whether ``exc`` passed through torch's DataLoader (``torch/utils/data``) on its way up."""
    tb = exc.__traceback__
    while tb is not None:
        if "/torch/utils/data/" in tb.tb_frame.f_code.co_filename.replace("\\", "/"):
            return True
        tb = tb.tb_next
    return False


def loader_failure(exc: BaseException) -> str | None:
    """The DataLoader's own message when ``exc`` (or an exception it was raised while handling)
    is a dead or stuck worker, else None. A worker that dies while it hands a batch over can
    break the connection before the DataLoader sees it dead: the ConnectionError or EOFError of
    reading that batch is the same failure."""
    seen: BaseException | None = exc
    while seen is not None:
        text = str(seen).strip()
        if isinstance(seen, RuntimeError) and text.startswith(("DataLoader worker",
                                                               "DataLoader timed out")):
            return text
        if isinstance(seen, (ConnectionError, EOFError)) and _raised_in_the_loader(seen):
            return (f"DataLoader worker connection lost ({type(seen).__name__}: "
                    f"{text or 'no message'}): a worker exited while handing over a batch")
        seen = seen.__cause__ or seen.__context__
    return None


def data_stop(exc: BaseException, step: int, checkpoint: object) -> DataLoadError | None:
    """``exc`` as the one-line error that stops the run before optimiser step ``step``, or None
    when it is not about the data. A ``DataLoadError`` raised in a loader worker comes back as
    "Caught DataLoadError in DataLoader worker process N" and the worker's traceback, whose last
    line holds the message."""
    if isinstance(exc, DataLoadError):
        text = str(exc).strip()
        if "\n" in text:  # re-raised by the DataLoader: "...DataLoadError: <the line>"
            text = text.splitlines()[-1].split(f"{DataLoadError.__name__}: ", 1)[-1]
        return DataLoadError(text)
    text = loader_failure(exc)
    if text is None:
        return None
    return DataLoadError(
        f"data loading failed before step {step}: {text.splitlines()[0]}; the last checkpoint "
        f"({checkpoint or 'none'}) is intact: run the same command to resume (lower "
        "train.num_workers if workers run out of memory)")
