import uuid

import pytest

from bot.config import Config
from bot.errors import InvalidInput
from bot.requests import ResolvedRequest, build_task, resolve_request, stricter_safety

CFG = Config()


def resolve(**kw):
    kw.setdefault("prompt", "a red fox running through fresh snow")
    return resolve_request(CFG, **kw)


def test_defaults_text_to_video():
    r = resolve()
    assert (r.model_key, r.model_id, r.aspect, r.width, r.height) == (
        "kling-2.5-turbo-pro", "klingai:6@1", "16:9", 1280, 720)
    assert r.duration == 5 and r.variations == 1 and r.output_format == "MP4"
    assert r.estimate_micro == 350_000  # $0.07/s x 5 s, the seed's price


@pytest.mark.parametrize(
    ("model", "aspect", "size"),
    [
        ("kling-2.5-turbo-pro", "16:9", (1280, 720)),
        ("kling-2.5-turbo-pro", "9:16", (720, 1280)),
        ("kling-2.5-turbo-pro", "1:1", (720, 720)),
        ("kling-2.1-pro", "16:9", (1920, 1080)),
        ("kling-2.1-pro", "9:16", (1080, 1920)),
        ("kling-2.1-pro", "1:1", (1080, 1080)),
    ],
)
def test_aspect_maps_to_model_size(model, aspect, size):
    r = resolve(model=model, aspect=aspect, first_frame_size=(1000, 1000))
    assert (r.width, r.height) == size


@pytest.mark.parametrize(
    ("frame", "aspect"),
    [((1920, 1080), "16:9"), ((1080, 1920), "9:16"), ((800, 760), "1:1"), ((1600, 1000), "16:9"),
     ((700, 1000), "9:16")],
)
def test_aspect_defaults_to_closest_to_first_frame(frame, aspect):
    assert resolve(first_frame_size=frame).aspect == aspect


def test_every_parameter_resolves_and_serialises():
    r = resolve(model="kling-2.1-pro", duration=10, aspect="9:16", negative_prompt="blurry, text",
                cfg_scale="0.72", variations=3, output_format="webm", quality=80,
                first_frame_size=(1080, 1920), has_last_frame=True)
    assert r.estimate_micro == 100_000 * 10 * 3
    task_uuid = str(uuid.uuid4())
    wire = build_task(r, task_uuid=task_uuid, runware=CFG.runware, first_image="img-1",
                      last_image="img-2").to_wire()
    assert wire == {
        "taskType": "videoInference",
        "taskUUID": task_uuid,
        "deliveryMethod": "async",
        "outputType": "URL",
        "includeCost": True,
        "model": "klingai:5@2",
        "positivePrompt": "a red fox running through fresh snow",
        "negativePrompt": "blurry, text",
        "width": 1080,
        "height": 1920,
        "duration": 10,
        "CFGScale": 0.72,
        "numberResults": 3,
        "outputFormat": "WEBM",
        "outputQuality": 80,
        "ttl": 86400,
        "safety": {"checkContent": True, "mode": "fast"},
        "inputs": {"frameImages": [{"image": "img-1", "frame": "first"}, {"image": "img-2", "frame": "last"}]},
    }


def test_optional_fields_are_omitted_on_the_wire():
    wire = build_task(resolve(), task_uuid="u", runware=CFG.runware).to_wire()
    for absent in ("negativePrompt", "CFGScale", "outputQuality", "inputs", "webhookURL"):
        assert absent not in wire
    assert wire["numberResults"] == 1


def test_safety_mode_never_weaker_than_config():
    assert stricter_safety("fast", "none") == "fast"
    assert stricter_safety("fast", "full") == "full"
    assert stricter_safety("none", None) == "none"
    cfg_none = CFG.runware.model_copy(update={"safety_mode": "none"})
    wire = build_task(resolve(), task_uuid="u", runware=cfg_none).to_wire()
    assert wire["safety"] == {"checkContent": False, "mode": "none"}
    wire = build_task(resolve(), task_uuid="u", runware=CFG.runware, safety_mode="full").to_wire()
    assert wire["safety"] == {"checkContent": True, "mode": "full"}


def test_cfg_and_prompt_edges_accepted():
    assert resolve(cfg_scale=0).cfg_scale == 0.0
    assert resolve(cfg_scale=1).cfg_scale == 1.0
    assert resolve(prompt="ab").prompt == "ab"
    assert len(resolve(prompt="x" * 2500).prompt) == 2500
    assert resolve(variations=4, quality=20).variations == 4
    assert resolve(quality=99).quality == 99
    assert resolve(duration="10").duration == 10


INVALID = [
    # (kwargs, field, words the message must contain)
    ({"prompt": None}, "prompt", "is required"),
    ({"prompt": ""}, "prompt", "2 to 2500"),
    ({"prompt": "x"}, "prompt", "2 to 2500"),
    ({"prompt": "   a   "}, "prompt", "1 characters"),
    ({"prompt": "x" * 2501}, "prompt", "2501 characters"),
    ({"prompt": "bad\x00prompt"}, "prompt", "NUL"),
    ({"negative_prompt": "x"}, "negative_prompt", "2 to 2500"),
    ({"negative_prompt": "y" * 2501}, "negative_prompt", "2 to 2500"),
    ({"model": "kling-9"}, "model", "kling-2.1-pro, kling-2.5-turbo-pro"),
    ({"model": "klingai:6@1"}, "model", "kling-2.5-turbo-pro"),
    ({"duration": 7}, "duration", "5 or 10 seconds"),
    ({"duration": 0}, "duration", "5 or 10 seconds"),
    ({"duration": "five"}, "duration", "5 or 10"),
    ({"duration": 5.5}, "duration", "5 or 10"),
    ({"aspect": "4:3"}, "aspect", "16:9, 9:16, 1:1"),
    ({"aspect": "16x9"}, "aspect", "16:9"),
    ({"cfg_scale": 1.5}, "cfg_scale", "0 to 1"),
    ({"cfg_scale": -0.1}, "cfg_scale", "0 to 1"),
    ({"cfg_scale": 0.555}, "cfg_scale", "steps of 0.01"),
    ({"cfg_scale": "high"}, "cfg_scale", "0 to 1"),
    ({"cfg_scale": float("nan")}, "cfg_scale", "0 to 1"),
    ({"variations": 0}, "variations", "1 to 4"),
    ({"variations": 5}, "variations", "1 to 4"),
    ({"variations": 2.5}, "variations", "1 to 4"),
    ({"variations": True}, "variations", "1 to 4"),
    ({"output_format": "GIF"}, "format", "MP4, WEBM, MOV"),
    ({"output_format": "mkv"}, "format", "MP4, WEBM, MOV"),
    ({"quality": 19}, "quality", "20 to 99"),
    ({"quality": 100}, "quality", "20 to 99"),
    ({"quality": "best"}, "quality", "20 to 99"),
    ({"model": "kling-2.1-pro"}, "first_frame", "first frame"),
    ({"has_last_frame": True}, "last_frame", "first frame"),
    ({"model": "kling-2.1-pro", "has_last_frame": True}, "first_frame", "is required"),
]


@pytest.mark.parametrize(("kwargs", "field", "words"), INVALID)
def test_invalid_inputs_name_field_value_and_allowed(kwargs, field, words):
    with pytest.raises(InvalidInput) as info:
        resolve(**kwargs)
    err = info.value
    assert err.field == field
    assert f"`{field}`" in err.message
    assert words in err.message
    assert "allowed:" in err.message


def test_invalid_value_is_shown():
    with pytest.raises(InvalidInput) as info:
        resolve(duration=7)
    assert "`duration` = 7 is not allowed; allowed: 5 or 10 seconds for Kling 2.5 Turbo Pro." == info.value.message


def test_model_without_last_frame_support(tmp_path):
    cfg = Config.model_validate({"models": {"kling-2.5-turbo-pro": {"last_frame": False}}})
    with pytest.raises(InvalidInput, match="no last frame"):
        resolve_request(cfg, prompt="a fox", first_frame_size=(800, 800), has_last_frame=True)


def test_build_task_refuses_missing_image_for_a_frame():
    r = resolve(first_frame_size=(1000, 600))
    with pytest.raises(ValueError):
        build_task(r, task_uuid="u", runware=CFG.runware)


# ---- loop (the first frame is the last frame too) ----------------------------------------------

def test_loop_sends_the_first_image_as_the_last_frame_too():
    r = resolve(first_frame_size=(1280, 720), loop=True)
    assert (r.loop, r.has_first_frame, r.has_last_frame) == (True, True, False)
    task_uuid = str(uuid.uuid4())
    wire = build_task(r, task_uuid=task_uuid, runware=CFG.runware, first_image="img-1").to_wire()
    assert wire["inputs"] == {"frameImages": [{"image": "img-1", "frame": "first"},
                                              {"image": "img-1", "frame": "last"}]}
    with pytest.raises(ValueError):  # a loop has no last image of its own
        build_task(r, task_uuid=task_uuid, runware=CFG.runware, first_image="img-1", last_image="img-2")
    assert resolve(first_frame_size=(1280, 720)).loop is False


LOOP_REFUSALS = [
    ({}, "`loop`: is on but no first_frame was given; allowed: loop only together with a first_frame "
         "(the video ends on the frame it starts from)."),
    ({"first_frame_size": (1280, 720), "has_last_frame": True},
     "`loop`: is on and a last_frame was given; allowed: loop or a last_frame, not both: loop uses the "
     "first frame as the last."),
]


@pytest.mark.parametrize(("kwargs", "message"), LOOP_REFUSALS)
def test_loop_refusals_name_the_field_value_and_what_is_allowed(kwargs, message):
    with pytest.raises(InvalidInput) as info:
        resolve(loop=True, **kwargs)
    assert (info.value.field, info.value.message) == ("loop", message)


def test_loop_with_a_model_without_last_frames_names_the_models_that_take_them():
    cfg = Config.model_validate({"models": {"kling-2.5-turbo-pro": {"last_frame": False}}})
    with pytest.raises(InvalidInput) as info:
        resolve_request(cfg, prompt="a fox", first_frame_size=(800, 800), loop=True)
    assert info.value.message == ("`loop`: is on, but Kling 2.5 Turbo Pro takes no last frame; allowed: loop "
                                  "with a model that takes a last frame: Kling 2.1 Pro (kling-2.1-pro).")
    none = Config.model_validate({"models": {"kling-2.5-turbo-pro": {"last_frame": False},
                                             "kling-2.1-pro": {"last_frame": False}}})
    with pytest.raises(InvalidInput, match="none of the configured models takes a last frame"):
        resolve_request(none, prompt="a fox", first_frame_size=(800, 800), loop=True)


def test_loop_must_be_a_boolean():
    with pytest.raises(InvalidInput, match="`loop` = 'yes' is not allowed; allowed: true or false"):
        resolve(first_frame_size=(800, 800), loop="yes")


def test_a_stored_loop_without_its_first_frame_is_not_a_request():
    stored = resolve(first_frame_size=(1280, 720), loop=True).model_dump(mode="json")
    assert ResolvedRequest.model_validate(stored).loop is True
    with pytest.raises(ValueError):
        ResolvedRequest.model_validate({**stored, "has_first_frame": False})
    with pytest.raises(ValueError):
        ResolvedRequest.model_validate({**stored, "has_last_frame": True})
