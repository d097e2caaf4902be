""""Did you mean ...?" for an unknown key: the keys the model accepts at that place (a close spelling), or a nested
model that has the key (`mode` on a pod is `sidecar.mode`)."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel, Tag


def _members(annotation: Any, tag: object = None) -> list[Any]:
    """The types an annotation allows, Annotated/Optional/Union unwrapped; with `tag`, only the discriminated
    union's member of that tag (pydantic puts it into error paths: checks.0.probe.samples)."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        inner, *metadata = typing.get_args(annotation)
        tags = [getattr(m, "tag", None) for m in metadata if isinstance(m, Tag)]
        if tag is not None and tags and tag not in tags:
            return []
        return _members(inner, None if tags else tag)
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg, tag)]
    return [annotation]


def _field(model: type[BaseModel], key: object) -> Any:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info.annotation
    return None


def _step(annotation: Any, part: object) -> Any:
    """The type one step down the path: a model's field, a dict's value, a list's item."""
    for member in _members(annotation):
        origin = typing.get_origin(member)
        if isinstance(member, type) and issubclass(member, BaseModel):
            found = _field(member, part)
            if found is not None:
                return found
        elif origin is dict and isinstance(part, str):
            return typing.get_args(member)[1]
        elif origin is list and isinstance(part, int):
            return typing.get_args(member)[0]
    return None


def model_at(root: type[BaseModel], loc: Sequence[object]) -> type[BaseModel] | None:
    """The model whose keys are checked at loc (the unknown key's parent); union tags in the path are skipped."""
    current: Any = root
    for part in loc:
        tagged = _members(current, part)
        if len(tagged) == 1 and len(_members(current)) > 1:  # a union tag: the member it names
            current = tagged[0]
        elif (below := _step(current, part)) is not None:
            current = below
    models = [m for m in _members(current) if isinstance(m, type) and issubclass(m, BaseModel)]
    return models[0] if len(models) == 1 else None


def _keys(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def suggestion(root: type[BaseModel], loc: Sequence[object], key: str) -> str:
    """' (did you mean X?)', or '' when nothing is close."""
    model = model_at(root, loc)
    if model is None:
        return ""
    for name in _keys(model):
        nested = [m for m in _members(_field(model, name)) if isinstance(m, type) and issubclass(m, BaseModel)]
        if any(key in _keys(m) for m in nested):
            return f"; '{key}' is a key of {name}: {name}: {{{key}: ...}}"
    close = difflib.get_close_matches(key, _keys(model), n=1, cutoff=0.7)
    return f"; did you mean '{close[0]}'?" if close else f"; known keys here: {', '.join(_keys(model))}"
