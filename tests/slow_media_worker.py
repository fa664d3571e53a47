"""The media worker behind a gate: it waits until the file named by KLINGBOT_TEST_MEDIA_GATE exists,
then does the real work (bot.services.media_ops). Tests hold a fit open with it."""

import os
import sys
import time
from pathlib import Path

from bot.services.media_ops import main

if __name__ == "__main__":
    gate = Path(os.environ["KLINGBOT_TEST_MEDIA_GATE"])
    deadline = time.monotonic() + 120
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    sys.exit(main(sys.argv[1:]))
