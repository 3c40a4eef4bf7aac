"""Settings every test shares, whichever machine it lands on.

``train.precision=auto`` picks bf16 where the CPU computes it natively (AVX512-BF16 on a Zen 4)
and fp32 elsewhere (a Zen 3). The suite pins that answer to "not native" through
``MIM_NATIVE_BF16`` (``mim/engine/precision.py``), inherited by every process a test starts, so
no outcome depends on the CPU; the tests of the bf16-default path set it to 1 themselves. Set
it before running pytest to run the whole suite on the other path.
"""
from __future__ import annotations

import os

os.environ.setdefault("MIM_NATIVE_BF16", "0")
