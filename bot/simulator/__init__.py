"""A Runware simulator: a real aiohttp server that plays Runware's task API for tests, the bench
and `--sandbox` runs (SPEC 4 and 9)."""

from .media import make_small, make_video
from .models import MODELS, SimModel
from .server import Simulator, run_simulator, serve
from .state import Faults, SimTask, Stats

__all__ = [
    "MODELS", "Faults", "SimModel", "SimTask", "Simulator", "Stats", "make_small", "make_video", "run_simulator",
    "serve",
]
