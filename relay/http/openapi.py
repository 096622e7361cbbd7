"""An OpenAPI 3.1 document built from a route table: the same table that installs the routes describes them.

Schemas come from pydantic models (`model_json_schema`), so the document is generated, never kept by hand.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

__all__ = ["Answer", "ListOf", "Param", "Route", "openapi_document"]

_REF = "#/components/schemas/{model}"


@dataclass(frozen=True, slots=True)
class ListOf:
    """An answer that is a JSON array of `model`."""

    model: type[BaseModel]


Answer = type[BaseModel] | ListOf | Mapping[str, Any]  # a model, an array of one, or a literal JSON Schema


@dataclass(frozen=True, slots=True)
class Param:
    """A query or path parameter with its JSON Schema."""

    name: str
    description: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    where: Literal["query", "path"] = "query"


@dataclass(frozen=True, slots=True)
class Route:
    """One operation: how it is served and how it is described.

    `answers` maps each status the handler gives to what it answers with.
    """

    method: Literal["GET", "POST"]
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    summary: str
    answers: Mapping[int, Answer]
    params: Sequence[Param] = ()
    body: type[BaseModel] | None = None

    @property
    def operation_id(self) -> str:
        return self.handler.__name__


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    """A `$ref` to `model`, its schema (and those it refers to) added to `components`."""
    if model.__name__ not in components:
        schema = model.model_json_schema(by_alias=True, ref_template=_REF)
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    return {"$ref": _REF.format(model=model.__name__)}


def _answer_schema(answer: Answer, components: dict[str, Any]) -> dict[str, Any]:
    if isinstance(answer, ListOf):
        return {"type": "array", "items": _schema(answer.model, components)}
    if isinstance(answer, type):
        return _schema(answer, components)
    return dict(answer)


_REASONS = {
    200: "OK",
    202: "Accepted",
    400: "Bad request: the message names the parameter or field",
    401: "No valid admin bearer token",
    404: "No such record or subscriber",
    503: "The store is unavailable; retry shortly",
}


def openapi_document(
    routes: Iterable[Route], *, title: str, version: str, description: str, security_scheme: str = "adminToken"
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `routes`; every operation needs the bearer token of `security_scheme`."""
    components: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {
            "operationId": route.operation_id,
            "summary": route.summary,
            "responses": {
                str(status): {
                    "description": _REASONS.get(status, "Answer"),
                    "content": {"application/json": {"schema": _answer_schema(answer, components)}},
                }
                for status, answer in sorted(route.answers.items())
            },
        }
        if route.params:
            operation["parameters"] = [
                {
                    "name": p.name,
                    "in": p.where,
                    "required": p.where == "path",
                    "description": p.description,
                    "schema": dict(p.schema),
                }
                for p in route.params
            ]
        if route.body is not None:
            operation["requestBody"] = {
                "required": False,
                "content": {"application/json": {"schema": _schema(route.body, components)}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {security_scheme: {"type": "http", "scheme": "bearer"}},
        },
        "security": [{security_scheme: []}],
    }
