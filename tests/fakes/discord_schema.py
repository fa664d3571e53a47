"""Discord's request schema, as the fake Discord checks it: every JSON body and multipart ``payload_json``
is validated per route with the pydantic models of ``discordopenapi`` (generated from Discord's OpenAPI
spec), plus the documented limits the schema does not encode. A failure is what Discord answers: 400 with
code 50035 and an ``errors`` tree naming the field.

The package's oneOf wrapper classes are broken (a valid body fails with "Multiple matches found": the
``type`` discriminator is not enforced), so the walk below never validates through a wrapper: it picks the
concrete model by ``type`` itself, validates it, and hands the parent an already validated instance.
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from openapi_client import models as dm
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

# Limits Discord documents that the OpenAPI description leaves out or states looser (message create
# says content <= 4000; a bot's messages are held to 2000).
CONTENT_MAX = 2000
EMBEDS_TOTAL_MAX = 6000
FILES_MAX = 10
ACTION_ROWS_MAX = 5
IS_COMPONENTS_V2 = 1 << 15

# The concrete model for each value of a body's ``type`` (and select default values' string types).
# A wrapper's candidates are looked up here by name; a value with no candidate is a violation.
_MODELS_BY_TYPE: dict[Any, tuple[str, ...]] = {
    1: ("ApplicationCommandSubcommandOption", "ActionRowComponentForMessageRequest",
        "PongInteractionCallbackRequest"),
    2: ("ApplicationCommandSubcommandGroupOption", "ButtonComponentForMessageRequest"),
    3: ("ApplicationCommandStringOption", "StringSelectComponentForMessageRequest"),
    4: ("ApplicationCommandIntegerOption", "CreateMessageInteractionCallbackRequest"),
    5: ("ApplicationCommandBooleanOption", "UserSelectComponentForMessageRequest",
        "CreateMessageInteractionCallbackRequest"),
    6: ("ApplicationCommandUserOption", "RoleSelectComponentForMessageRequest",
        "UpdateMessageInteractionCallbackRequest"),
    7: ("ApplicationCommandChannelOption", "MentionableSelectComponentForMessageRequest",
        "UpdateMessageInteractionCallbackRequest"),
    8: ("ApplicationCommandRoleOption", "ChannelSelectComponentForMessageRequest",
        "ApplicationCommandAutocompleteCallbackRequest"),
    9: ("ApplicationCommandMentionableOption", "SectionComponentForMessageRequest",
        "ModalInteractionCallbackRequest"),
    10: ("ApplicationCommandNumberOption", "TextDisplayComponentForMessageRequest"),
    11: ("ApplicationCommandAttachmentOption", "ThumbnailComponentForMessageRequest"),
    12: ("MediaGalleryComponentForMessageRequest", "LaunchActivityInteractionCallbackRequest"),
    13: ("FileComponentForMessageRequest",),
    14: ("SeparatorComponentForMessageRequest",),
    17: ("ContainerComponentForMessageRequest",),
    "user": ("UserSelectDefaultValue",),
    "role": ("RoleSelectDefaultValue",),
    "channel": ("ChannelSelectDefaultValue",),
}

_SNOWFLAKE = re.compile(r"0|[1-9][0-9]*")
_CALLBACK_TYPES = (1, 4, 5, 6, 7, 8, 9, 12)

# Pydantic's error types as Discord names them in a 50035 body.
_CODES = {
    "less_than_equal": "NUMBER_TYPE_MAX", "less_than": "NUMBER_TYPE_MAX",
    "greater_than_equal": "NUMBER_TYPE_MIN", "greater_than": "NUMBER_TYPE_MIN",
    "string_too_long": "BASE_TYPE_MAX_LENGTH", "too_long": "BASE_TYPE_MAX_LENGTH",
    "string_too_short": "BASE_TYPE_MIN_LENGTH", "too_short": "BASE_TYPE_MIN_LENGTH",
    "missing": "BASE_TYPE_REQUIRED", "int_type": "NUMBER_TYPE_COERCE", "int_parsing": "NUMBER_TYPE_COERCE",
    "string_type": "STRING_TYPE_CONVERT", "bool_type": "BOOLEAN_TYPE_COERCE",
    "model_type": "MODEL_TYPE_CONVERT", "dict_type": "MODEL_TYPE_CONVERT", "list_type": "LIST_TYPE_CONVERT",
}


@dataclass
class Violation(Exception):
    """One field of one request that Discord would refuse."""

    path: tuple[str, ...]
    code: str
    message: str
    route: str = ""

    @property
    def field(self) -> str:
        return ".".join(self.path) or "<body>"

    def __str__(self) -> str:
        return f"{self.route} {self.field}: {self.code}: {self.message}"

    def body(self) -> dict:
        """Discord's 400 body: code 50035 and the failing field as a tree."""
        node: dict = {"_errors": [{"code": self.code, "message": self.message}]}
        for part in reversed(self.path):
            node = {part: node}
        return {"code": 50035, "message": "Invalid Form Body", "errors": node}


@dataclass
class _Route:
    method: str
    pattern: re.Pattern
    kind: str  # "model", "list", "callback", "any"
    models: tuple[str, ...]
    max_items: int = 0


_ROUTES = (
    _Route("PUT", re.compile(r"^/applications/\d+(?:/guilds/\d+)?/commands$"), "list",
           ("ApplicationCommandUpdateRequest",), 130),
    _Route("POST", re.compile(r"^/applications/\d+(?:/guilds/\d+)?/commands$"), "model",
           ("ApplicationCommandCreateRequest",)),
    _Route("POST", re.compile(r"^/channels/\d+/messages$"), "model", ("MessageCreateRequest",)),
    _Route("PATCH", re.compile(r"^/channels/\d+/messages/\d+$"), "model", ("MessageEditRequestPartial",)),
    _Route("POST", re.compile(r"^/interactions/\d+/[^/]+/callback$"), "callback", ()),
    _Route("POST", re.compile(r"^/webhooks/\d+/[^/]+$"), "any",
           ("IncomingWebhookRequestPartial", "IncomingWebhookUpdateRequestPartial")),
    _Route("PATCH", re.compile(r"^/webhooks/\d+/[^/]+/messages/[^/]+$"), "model",
           ("IncomingWebhookUpdateRequestPartial",)),
    _Route("POST", re.compile(r"^/users/@me/channels$"), "model", ("CreatePrivateChannelRequest",)),
)

# Bodies that carry a message: the documented limits below apply to them (a callback's is in ``data``).
_MESSAGE_ROUTES = re.compile(r"^/(channels/\d+/messages|webhooks/\d+/[^/]+|interactions/\d+/[^/]+/callback)")


def check_request(method: str, path: str, payload: Any, file_count: int = 0) -> Violation | None:
    """The first thing Discord would refuse in this request's body, or None. ``path`` is below the API
    base (``/channels/1/messages``); routes without a request schema are not checked."""
    route = next((r for r in _ROUTES if r.method == method and r.pattern.match(path)), None)
    if route is None:
        return None
    try:
        _check_route(route, payload)
        if _MESSAGE_ROUTES.match(path):
            message = payload.get("data") if route.kind == "callback" else payload
            check_message_limits(message if isinstance(message, dict) else {}, file_count)
    except Violation as violation:
        violation.route = f"{method} {path}"
        return violation
    return None


def _check_route(route: _Route, payload: Any) -> None:
    if route.kind == "list":
        if not isinstance(payload, list):
            raise Violation((), "LIST_TYPE_CONVERT", "Must be an array.")
        if len(payload) > route.max_items:
            raise Violation((), "BASE_TYPE_MAX_LENGTH", f"Must be {route.max_items} or fewer in length.")
        for i, item in enumerate(payload):
            _build(_model(route.models[0]), item, (str(i),))
    elif route.kind == "callback":
        kind = payload.get("type") if isinstance(payload, dict) else None
        if kind not in _CALLBACK_TYPES:
            raise Violation(("type",), "BASE_TYPE_CHOICES", f"Value must be one of {_CALLBACK_TYPES}.")
        [name] = [n for n in _MODELS_BY_TYPE[kind] if n.endswith("CallbackRequest")]
        _build(_model(name), payload, ())
    elif route.kind == "any":
        first: Violation | None = None
        for name in route.models:
            try:
                _build(_model(name), payload, ())
                return
            except Violation as violation:
                first = first or violation
        assert first is not None
        raise first
    else:
        _build(_model(route.models[0]), payload, ())


def check_message_limits(message: dict, file_count: int) -> None:
    """Discord's documented message limits that the schema does not state (or states looser)."""
    content = message.get("content")
    if isinstance(content, str) and len(content) > CONTENT_MAX:
        raise Violation(("content",), "BASE_TYPE_MAX_LENGTH", f"Must be {CONTENT_MAX} or fewer in length.")
    total = 0
    for embed in message.get("embeds") or []:
        if not isinstance(embed, dict):
            continue
        total += len(embed.get("title") or "") + len(embed.get("description") or "")
        total += sum(len(f.get("name") or "") + len(f.get("value") or "")
                     for f in embed.get("fields") or [] if isinstance(f, dict))
        total += len((embed.get("footer") or {}).get("text") or "")
        total += len((embed.get("author") or {}).get("name") or "")
    if total > EMBEDS_TOTAL_MAX:
        raise Violation(("embeds",), "MAX_EMBED_SIZE_EXCEEDED",
                        f"Embed size exceeds maximum size of {EMBEDS_TOTAL_MAX} (got {total}).")
    if file_count > FILES_MAX:
        raise Violation(("files",), "BASE_TYPE_MAX_LENGTH", f"Must be {FILES_MAX} or fewer in length.")
    components = message.get("components") or []
    if not int(message.get("flags") or 0) & IS_COMPONENTS_V2 and len(components) > ACTION_ROWS_MAX:
        raise Violation(("components",), "BASE_TYPE_MAX_LENGTH",
                        f"Must be {ACTION_ROWS_MAX} or fewer in length.")
    check_buttons(components, ("components",))


# Discord's rules per button style that the schema leaves out (every field there is optional):
# style -> (fields it needs, fields it must not have). 5 = link, 6 = premium (buy a SKU).
_BUTTON_FIELDS = {5: (("url",), ("custom_id", "sku_id")),
                  6: (("sku_id",), ("custom_id", "label", "emoji", "url"))}
_PLAIN_BUTTON = (("custom_id",), ("url", "sku_id"))  # styles 1 to 4


def check_buttons(components: Any, path: tuple[str, ...]) -> None:
    for i, item in enumerate(components if isinstance(components, list) else []):
        if not isinstance(item, dict):
            continue
        where = (*path, str(i))
        if item.get("type") == 2:
            style = item.get("style")
            if style not in (1, 2, 3, 4, 5, 6):
                raise Violation((*where, "style"), "BASE_TYPE_CHOICES", "Value must be one of (1, 2, 3, 4, 5, 6).")
            needs, forbidden = _BUTTON_FIELDS.get(style, _PLAIN_BUTTON)
            for name in needs:
                if item.get(name) in (None, ""):
                    raise Violation((*where, name), "BASE_TYPE_REQUIRED", "This field is required")
            for name in forbidden:
                if item.get(name) not in (None, ""):
                    raise Violation((*where, name), "BASE_TYPE_INVALID",
                                    f"A button of style {style} cannot have a {name}.")
        check_buttons(item.get("components"), (*where, "components"))


def check_object(model_name: str, value: Any) -> Violation | None:
    """``value`` (an object the fake sends, e.g. an entitlement) checked as Discord's ``model_name``."""
    try:
        _build(_model(model_name), value, ())
    except Violation as violation:
        violation.route = model_name
        return violation
    return None


# ---- the walk ----------------------------------------------------------------------------------------


@cache
def _model(name: str) -> type[BaseModel]:
    return getattr(dm, name)


def _is_wrapper(cls: type[BaseModel]) -> bool:
    return "actual_instance" in cls.model_fields


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    origin = typing.get_origin(annotation)
    if origin is not None:
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return [annotation] if isinstance(annotation, type) and issubclass(annotation, BaseModel) else []


def _build(cls: type[BaseModel], value: Any, path: tuple[str, ...]) -> BaseModel:
    """``value`` validated as ``cls``; raises the first Violation, with its path from the body's root."""
    if _is_wrapper(cls):
        return cls.model_construct(actual_instance=_one_of(cls, value, path))
    if not isinstance(value, dict):
        raise Violation(path, "MODEL_TYPE_CONVERT", f"Must be an object (got {value!r}).")
    patterned = cls.__pydantic_decorators__.field_validators
    data = {}
    for name, f in cls.model_fields.items():
        key = f.alias or name
        if key in value:
            item = value[key]
            # A string with a pattern (the spec's snowflakes) also takes an integer, as Discord does.
            data[name] = str(item) if f"{name}_validate_regular_expression" in patterned and _is_id(item) \
                else _convert(f.annotation, item, (*path, key))
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise _violation(exc, path) from None


def _convert(annotation: Any, value: Any, path: tuple[str, ...]) -> Any:
    """Nested objects replaced by validated instances; everything else left for the parent to check."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        if _is_snowflake(annotation):
            if _is_id(value):
                return str(value)
            if isinstance(value, str) and not _SNOWFLAKE.fullmatch(value):
                # The models keep this pattern only on single fields, not on list items: check it here.
                raise Violation(path, "NUMBER_TYPE_COERCE", f"Value {value!r} is not snowflake.")
        return _convert(args[0], value, path)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return _convert(options[0], value, path) if value is not None and len(options) == 1 else value
    if origin is list and isinstance(value, list):
        return [_convert(args[0], item, (*path, str(i))) for i, item in enumerate(value)]
    if origin is dict and isinstance(value, dict):
        return {k: _convert(args[1], v, (*path, str(k))) for k, v in value.items()}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _build(annotation, value, path)
    return value


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_snowflake(annotation: Any) -> bool:
    """The generated models render the spec's SnowflakeType (a string with a digits pattern) as a bare
    ``Annotated[str, Field(strict=True)]``. Discord takes a snowflake as an integer too (discord.py sends
    ``allowed_mentions`` ids as integers), so an integer there is passed on as its string."""
    base, *extra = typing.get_args(annotation)
    return base is str and len(extra) == 1 and isinstance(extra[0], FieldInfo) and \
        [type(m).__name__ for m in extra[0].metadata] == ["Strict"]


def _one_of(cls: type[BaseModel], value: Any, path: tuple[str, ...]) -> Any:
    candidates = [f.annotation for name, f in cls.model_fields.items()
                  if name.startswith(("oneof_schema_", "anyof_schema_"))]
    models = [m for c in candidates for m in _models_in(c)]
    if models:
        kind = value.get("type") if isinstance(value, dict) else None
        names = _MODELS_BY_TYPE.get(kind, ()) if isinstance(kind, int | str) else ()
        chosen = [m for m in models if m.__name__ in names]
        if not chosen:
            allowed = sorted(str(k) for k, ns in _MODELS_BY_TYPE.items() if any(m.__name__ in ns for m in models))
            raise Violation((*path, "type"), "BASE_TYPE_CHOICES",
                            f"Value must be one of {', '.join(allowed)} (got {kind!r}).")
        return _build(chosen[0], value, path)
    errors: list[ValidationError] = []
    for annotation in candidates:
        try:
            return _adapter(annotation).validate_python(value)
        except ValidationError as exc:
            errors.append(exc)
    # Name the failure of the candidate of the value's own type (a too-long string nonce, not "not an int").
    wrong_type = ("_type", "_parsing")
    raise _violation(next((e for e in errors if not e.errors()[0]["type"].endswith(wrong_type)), errors[0]), path)


@cache
def _adapter(annotation: Any) -> TypeAdapter:
    return TypeAdapter(annotation)


def _violation(exc: ValidationError, path: tuple[str, ...]) -> Violation:
    err = exc.errors(include_url=False)[0]
    where = (*path, *(str(p) for p in err["loc"]))
    got = err.get("input")
    shown = "" if err["type"] == "missing" else \
        f" (got {len(got)} items)" if isinstance(got, list) else f" (got {_short(got)})"
    return Violation(where, _CODES.get(err["type"], "BASE_TYPE_INVALID"), err["msg"] + shown)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}... ({len(value) if isinstance(value, str) else '?'} chars)"


# ---- the suite's count -------------------------------------------------------------------------------


@dataclass
class Ledger:
    """Every violation any fake saw in this process, and whether its test said it sends one on purpose
    (the ``discord_invalid_bodies`` marker, or ``FakeDiscord.invalid_bodies_expected``)."""

    checked: int = 0
    expected: list[Violation] = field(default_factory=list)
    unexpected: list[tuple[str, Violation]] = field(default_factory=list)
    current_test: str = "<outside any test>"
    test_expects_invalid: bool = False


LEDGER = Ledger()
