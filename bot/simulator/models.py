"""What the simulator knows about Runware's Kling models, from Runware's model pages.

Deliberately separate from the bot's config registry: the simulator plays Runware, so a wrong entry
in the bot's registry must show up as a Runware error, not be mirrored here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SimModel:
    model_id: str
    sizes: tuple[tuple[int, int], ...]  # (width, height) pairs Runware accepts
    durations: tuple[int, ...]
    fps: int
    text_to_video: bool  # False: inputs.frameImages is required
    micro_usd_per_second: int  # what the simulator bills per second of each delivered video

    @property
    def widths(self) -> list[int]:
        return sorted({w for w, _ in self.sizes})

    def heights_for(self, width: int | None = None) -> list[int]:
        return sorted({h for w, h in self.sizes if width is None or w == width})

    def cost_micro(self, duration: int) -> int:
        return self.micro_usd_per_second * duration


MODELS: dict[str, SimModel] = {
    m.model_id: m
    for m in (
        SimModel(
            model_id="klingai:6@1",  # KlingAI 2.5 Turbo Pro: 0.35 for 5 s, 0.70 for 10 s
            sizes=((1280, 720), (720, 1280), (720, 720)),
            durations=(5, 10),
            fps=30,
            text_to_video=True,
            micro_usd_per_second=70_000,
        ),
        SimModel(
            model_id="klingai:5@2",  # KlingAI 2.1 Pro: image-to-video only
            sizes=((1920, 1080), (1080, 1920), (1080, 1080)),
            durations=(5, 10),
            fps=24,
            text_to_video=False,
            # Unpublished; deliberately not the bot's $0.10/s estimate, so settling to the real
            # cost is exercised.
            micro_usd_per_second=98_000,
        ),
    )
}
