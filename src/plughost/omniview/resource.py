"""``ResourceClient``: ``omniview.sdk.resource.v1.ResourcePlugin`` with JSON-decoded resources.

The SDK carries a resource as JSON bytes and reports a failed operation in the
answer (``ResourceError``: code, title, message, suggestions), not as a gRPC error;
both become Python here: data is decoded, and a ``ResourceError`` raises a
``PluginCallError`` with the plugin's title, message and suggestions. Every other RPC
(connections, schemas, actions, watches ...) is there as on any ``ServiceClient``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import PluginCallError, ValidationError
from .clients import ServiceClient

__all__ = ["ResourceClient", "ResourcePage"]


@dataclasses.dataclass(frozen=True)
class ResourcePage:
    """One answer of List or Find."""

    items: list[Any]
    total: int
    next_cursor: str = ""


def _decode(data: bytes) -> Any:
    if not data:
        return None
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return data


def _encode(data: Any) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    try:
        return json.dumps(data, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"cannot send {data!r} as a resource: {exc}") from None


class ResourceClient(ServiceClient):
    """CRUD on a plugin's resources: ``get``, ``list``, ``find``, ``create``, ``update``,
    ``delete``; ``connections()``. Each names the resource type by its key
    (``core::v1::Pod``) and the connection by id."""

    def _raise_for(self, method: str, key: str, response: Any) -> None:
        if not response.HasField("error"):
            return
        error = response.error
        codes = self.sdk.messages("common").ResourceErrorCode
        code = codes.Name(error.code) if error.code in codes.values() else str(error.code)
        raise PluginCallError(
            f"{self.service.name}/{method} of {key!r} failed ({code}): "
            f"{error.message or error.title}",
            title=error.title or None,
            plugin_id=self.plugin_id,
            suggestions=list(error.suggestions),
        )

    async def connections(self, *, timeout: float | None = None) -> list[Any]:
        """The plugin's connections (``omniview.sdk.common.v1.Connection`` messages)."""
        response = await self.call("LoadConnections", timeout=timeout)
        return [*response.connections]

    async def _one(
        self, method: str, key: str, connection: str, timeout: float | None, **fields: Any
    ) -> Any:
        """Call ``method`` about one resource of type ``key``; raise the error it answers."""
        response = await self.call(
            method, resource_key=key, connection_id=connection, timeout=timeout, **fields
        )
        self._raise_for(method, key, response)
        return response

    async def get(
        self,
        key: str,
        id: str,
        *,
        connection: str,
        namespace: str = "",
        timeout: float | None = None,
    ) -> Any:
        """One resource, decoded from its JSON."""
        response = await self._one("Get", key, connection, timeout, id=id, namespace=namespace)
        return _decode(response.data)

    @staticmethod
    def _paging(
        order: Iterable[str | tuple[str, bool]], page: int, page_size: int, cursor: str
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "order": [
                {"path": o, "descending": False}
                if isinstance(o, str)
                else {"path": o[0], "descending": o[1]}
                for o in order
            ]
        }
        if page or page_size or cursor:
            fields["pagination"] = {"page": page, "page_size": page_size, "cursor": cursor}
        return fields

    def _page(self, method: str, key: str, response: Any) -> ResourcePage:
        self._raise_for(method, key, response)
        return ResourcePage(
            [_decode(item) for item in response.items], response.total, response.next_cursor
        )

    async def list(
        self,
        key: str,
        *,
        connection: str,
        namespaces: Iterable[str] = (),
        order: Iterable[str | tuple[str, bool]] = (),
        page: int = 0,
        page_size: int = 0,
        cursor: str = "",
        timeout: float | None = None,
    ) -> ResourcePage:
        """A page of resources (``order``: paths, or (path, descending) pairs)."""
        response = await self.call(
            "List",
            resource_key=key,
            connection_id=connection,
            namespaces=[*namespaces],
            timeout=timeout,
            **self._paging(order, page, page_size, cursor),
        )
        return self._page("List", key, response)

    async def find(
        self,
        key: str,
        *,
        connection: str,
        text: str = "",
        filters: Mapping[str, Any] | None = None,
        namespaces: Iterable[str] = (),
        order: Iterable[str | tuple[str, bool]] = (),
        page: int = 0,
        page_size: int = 0,
        cursor: str = "",
        timeout: float | None = None,
    ) -> ResourcePage:
        """Resources matching ``text`` and ``filters`` (a FilterExpression as a dict)."""
        fields = self._paging(order, page, page_size, cursor)
        if filters is not None:
            fields["filters"] = filters
        response = await self.call(
            "Find",
            resource_key=key,
            connection_id=connection,
            namespaces=[*namespaces],
            text_query=text,
            timeout=timeout,
            **fields,
        )
        return self._page("Find", key, response)

    async def create(
        self,
        key: str,
        data: Any,
        *,
        connection: str,
        namespace: str = "",
        timeout: float | None = None,
    ) -> Any:
        """Create a resource from ``data`` (JSON-able, or JSON as str/bytes); what was created."""
        fields = {"namespace": namespace, "data": _encode(data)}
        response = await self._one("Create", key, connection, timeout, **fields)
        return _decode(response.data)

    async def update(
        self,
        key: str,
        id: str,
        data: Any,
        *,
        connection: str,
        namespace: str = "",
        timeout: float | None = None,
    ) -> Any:
        """Replace a resource with ``data``; the updated resource."""
        fields = {"id": id, "namespace": namespace, "data": _encode(data)}
        response = await self._one("Update", key, connection, timeout, **fields)
        return _decode(response.data)

    async def delete(
        self,
        key: str,
        id: str,
        *,
        connection: str,
        namespace: str = "",
        grace_period_seconds: int | None = None,
        timeout: float | None = None,
    ) -> bool:
        """Delete a resource; whether the plugin reports success."""
        fields: dict[str, Any] = {"id": id, "namespace": namespace}
        if grace_period_seconds is not None:
            fields["grace_period_seconds"] = grace_period_seconds
        response = await self._one("Delete", key, connection, timeout, **fields)
        return bool(response.success)
