"""The emulator's HTTP server: REST calls, streaming listeners, rules settings, and the :class:`Emulator` handle.

The unchanged firebase-admin SDK talks to it over real HTTP exactly as it talks to Google's emulator
(``FIREBASE_DATABASE_EMULATOR_HOST`` or a ``http://host:port?ns=NAME`` database URL):

- ``/<path>.json`` with GET (value, ``shallow``, queries, ETags, ``Accept: text/event-stream`` to listen), PUT
  (``if-match`` for transactions), POST (push), PATCH (multi-path update) and DELETE.
- ``/.settings/rules.json`` with GET (``format=strict``) and PUT, as owner only.
- ``ns=NAME`` picks a namespace: each has its own data, rules and listeners.
- Who is calling: ``auth_variable_override=<json>`` (rules apply with ``auth`` = that object, ``null`` =
  unauthenticated) wins over ``auth=<ID token>`` (the JWT payload is decoded without verification, like Google's
  emulator, ``auth.uid`` = ``sub``; ``auth=owner`` is admin), which wins over ``Authorization: Bearer <anything>``
  (admin, rules bypassed).
  A request with none of these is unauthenticated.

Every write is done synchronously inside its handler, after the body was read: the data-tree operations are pure
and fast, so writes to a namespace are serialised by the event loop itself and a transaction under contention ends
exact. A write that the rules deny has no side effect (google-auth repeats a 401 twice).

Listeners get their events through a per-listener queue bounded in bytes: a client that stops reading is dropped
(its connection is closed) when its queue overflows, never blocking the writer or other listeners.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path as FilePath
from typing import Any, Self
from urllib.parse import unquote, unquote_plus

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from . import DEFAULT_PORT, pushid, query, tree
from .rules import RuleSet, RulesParseError
from .tree import DataError, Path


log = logging.getLogger(__name__)

DEFAULT_KEEPALIVE_INTERVAL = 30.0
# The service's REST limit for one request body.
DEFAULT_MAX_BODY_BYTES = 256 * 1024 * 1024
# A listener whose unsent events exceed this is dropped (its stream is closed).
DEFAULT_LISTENER_BUFFER_BYTES = 16 * 1024 * 1024
DEFAULT_NAMESPACE = "default"

_QUERY_KEYS = ("orderBy", "limitToFirst", "limitToLast", "startAt", "endAt", "equalTo", "startAfter", "endBefore")
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_JSON_PARSE_ERROR = "Invalid data; couldn't parse JSON object, array, or value."
_PATCH_NOT_OBJECT = "Invalid data; couldn't parse JSON object. Are you sending a JSON object with valid key names?"
_PERMISSION_DENIED = "Permission denied"
_SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
_KEEPALIVE = b"event: keep-alive\ndata: null\n\n"
_CANCEL = b"event: cancel\ndata: null\n\n"
_ALLOW_ALL_RULES = {"rules": {".read": True, ".write": True}}


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _sse(event: str, path: Path, data: object) -> bytes:
    payload = _dumps({"path": "/" + "/".join(path), "data": tree.to_output(data)})
    return b"event: " + event.encode() + b"\ndata: " + payload.encode() + b"\n\n"


class _Caller:
    """Who made a request: an admin (rules bypassed) or a user whose ``auth`` the rules see (None = nobody)."""

    __slots__ = ("admin", "auth")

    def __init__(self, admin: bool, auth: object) -> None:
        self.admin = admin
        self.auth = auth


_ADMIN = _Caller(True, None)
_ANONYMOUS = _Caller(False, None)


class _HTTPError(Exception):
    """Ends a request with ``status`` and the body ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class _Listener:
    """One open stream: the listened path, who listens, and the events not yet written (bounded in bytes)."""

    __slots__ = ("path", "query", "caller", "chunks", "queued", "limit", "wake", "closing", "dropped",
                 "transport", "last_result")

    def __init__(self, path: Path, q: object, caller: _Caller, limit: int) -> None:
        self.path = path
        self.query = q
        self.caller = caller
        self.chunks: deque[bytes] = deque()
        self.queued = 0
        self.limit = limit
        self.wake = asyncio.Event()
        self.closing = False  # write what is queued, then end the stream
        self.dropped = False  # end now, discard what is queued
        self.transport: asyncio.Transport | None = None
        self.last_result: object = None

    def push(self, chunk: bytes) -> None:
        if self.closing or self.dropped:
            return
        if self.queued + len(chunk) > self.limit:
            log.warning("dropping a listener at /%s: it stopped reading (%d bytes queued)",
                        "/".join(self.path), self.queued)
            self.drop()
            return
        self.chunks.append(chunk)
        self.queued += len(chunk)
        self.wake.set()

    def finish(self, last: bytes | None = None) -> None:
        """Send ``last`` (if any) after what is queued, then end the stream."""
        if last is not None:
            self.push(last)
        self.closing = True
        self.wake.set()

    def drop(self) -> None:
        """End the stream now: the client sees its connection cut."""
        self.dropped = True
        self.chunks.clear()
        self.queued = 0
        self.wake.set()
        if self.transport is not None:
            self.transport.abort()


class _Namespace:
    """One database: its data (stored form), its own rules if any, and its listeners grouped by path."""

    __slots__ = ("name", "root", "rules", "rules_text", "listeners", "query_listeners")

    def __init__(self, name: str) -> None:
        self.name = name
        self.root: object = None
        self.rules: RuleSet | None = None
        self.rules_text: str | None = None
        self.listeners: dict[Path, set[_Listener]] = {}
        self.query_listeners: set[_Listener] = set()

    def add(self, listener: _Listener) -> None:
        if listener.query is not None:
            self.query_listeners.add(listener)
        else:
            self.listeners.setdefault(listener.path, set()).add(listener)

    def remove(self, listener: _Listener) -> None:
        if listener.query is not None:
            self.query_listeners.discard(listener)
            return
        group = self.listeners.get(listener.path)
        if group is not None:
            group.discard(listener)
            if not group:
                del self.listeners[listener.path]

    def all_listeners(self) -> Iterator[_Listener]:
        for group in list(self.listeners.values()):
            yield from list(group)
        yield from list(self.query_listeners)


def load_ruleset(rules: str | FilePath | Mapping[str, Any] | RuleSet | None) -> tuple[RuleSet | None, str | None]:
    """Turn what a user gives as rules into a RuleSet (and its source text when there is one).

    ``None`` means no rules (everything allowed); a ``Path`` is a rules file; a ``str`` is rules text when it
    starts with ``{`` or a comment, else a file name; a mapping is the parsed ``{"rules": ...}`` object.

    Raises:
        RulesParseError: the rules are invalid.
        OSError: the file cannot be read.
    """
    if rules is None:
        return None, None
    if isinstance(rules, RuleSet):
        return rules, None
    if isinstance(rules, Mapping):
        return RuleSet.from_json(dict(rules)), None
    if isinstance(rules, str):
        stripped = rules.lstrip()
        if stripped.startswith(("{", "//", "/*")):
            return RuleSet.from_text(rules), rules
        rules = FilePath(rules)
    text = FilePath(rules).read_text(encoding="utf-8")
    return RuleSet.from_text(text), text


class Database:
    """The state behind the server: namespaces, default rules, and the write/notify logic (no HTTP here)."""

    def __init__(self, *, listener_buffer_bytes: int = DEFAULT_LISTENER_BUFFER_BYTES) -> None:
        self.namespaces: dict[str, _Namespace] = {}
        self.default_rules: RuleSet | None = None
        self.default_rules_text: str | None = None
        self.listener_buffer_bytes = listener_buffer_bytes
        self.push_ids = pushid.PushIdGenerator()
        self._warned_indexes: set[tuple[str, Path, str]] = set()

    def namespace(self, name: str) -> _Namespace:
        ns = self.namespaces.get(name)
        if ns is None:
            ns = self.namespaces[name] = _Namespace(name)
        return ns

    def rules_of(self, ns: _Namespace) -> RuleSet | None:
        return ns.rules if ns.rules is not None else self.default_rules

    # -- rules -------------------------------------------------------------------------------------------------

    def set_rules(self, rules: RuleSet | None, text: str | None, namespace: str | None) -> None:
        """Replace a namespace's rules (``namespace=None``: the default of every namespace without its own),
        then cancel the listeners that may no longer read."""
        if namespace is None:
            self.default_rules, self.default_rules_text = rules, text
            affected = list(self.namespaces.values())
        else:
            ns = self.namespace(namespace)
            ns.rules, ns.rules_text = rules, text
            affected = [ns]
        now = _now_ms()
        for ns in affected:
            self.cancel_revoked(ns, now)

    def cancel_revoked(self, ns: _Namespace, now: int) -> None:
        """Send ``cancel`` to (and end) the listeners of ``ns`` whose read the rules no longer allow.

        Checked after a rules change and after every write (rules may depend on data: ``root.child(...)``).
        """
        ruleset = self.rules_of(ns)
        if ruleset is None:
            return
        verdicts: dict[tuple[Path, int, int], bool] = {}
        for listener in ns.all_listeners():
            caller = listener.caller
            if caller.admin:
                continue
            key = (listener.path, id(caller), id(listener.query))
            allowed = verdicts.get(key)
            if allowed is None:
                allowed = verdicts[key] = self._can_read(ruleset, ns.root, listener.path, caller, now, listener.query)
            if not allowed:
                ns.remove(listener)
                listener.finish(_CANCEL)

    def clear(self, namespace: str) -> None:
        ns = self.namespace(namespace)
        old = ns.root
        ns.root = None
        self.notify_set(ns, old, None, ())

    @staticmethod
    def _can_read(ruleset: RuleSet, root: object, path: Path, caller: _Caller, now: int, q: object) -> bool:
        qvars = query.rules_query_vars(q) if q is not None else None
        try:
            return bool(ruleset.can_read(root, path, auth=caller.auth, now=now, query=qvars))
        except Exception:  # a rules engine failure denies, it never breaks the server
            log.exception("rules evaluation failed for a read at /%s", "/".join(path))
            return False

    def check_read(self, ns: _Namespace, path: Path, caller: _Caller, q: object = None) -> None:
        if caller.admin:
            return
        ruleset = self.rules_of(ns)
        if ruleset is not None and not self._can_read(ruleset, ns.root, path, caller, _now_ms(), q):
            raise _HTTPError(401, _PERMISSION_DENIED)

    def warn_missing_index(self, ns: _Namespace, path: Path, q: query.Query) -> None:
        """Log once per location when a query lacks the ``.indexOn`` the service would demand.

        Like Google's emulator, the query is still answered (the deployed service would refuse it with 400).
        """
        wanted = query.required_index(q)
        ruleset = self.rules_of(ns)
        if wanted is None or ruleset is None or wanted in ruleset.index_on(path):
            return
        key = (ns.name, path, wanted)
        if key not in self._warned_indexes:
            self._warned_indexes.add(key)
            log.warning("namespace %s: %s", ns.name, query.missing_index_message(q, path))

    def check_write(self, ns: _Namespace, new_root: object, paths: list[Path], caller: _Caller, now: int) -> None:
        if caller.admin:
            return
        ruleset = self.rules_of(ns)
        if ruleset is None:
            return
        for path in paths:
            try:
                allowed = ruleset.can_write(ns.root, new_root, path, auth=caller.auth, now=now)
            except Exception:
                log.exception("rules evaluation failed for a write at /%s", "/".join(path))
                allowed = False
            if not allowed:
                raise _HTTPError(401, _PERMISSION_DENIED)

    # -- writes ------------------------------------------------------------------------------------------------

    def set(self, ns: _Namespace, path: Path, raw: object, caller: _Caller) -> object:
        """Write ``raw`` (JSON as received) at ``path``; returns the stored value. Raises DataError or 401."""
        now = _now_ms()
        if len(path) > tree.MAX_DEPTH:
            raise DataError(f"Invalid path: {tree.format_path(path)} is deeper than {tree.MAX_DEPTH} keys")
        value = None if raw is None else tree.prepare_write(raw, path, tree.get(ns.root, path), now)
        new_root = tree.set_at(ns.root, path, value)
        self.check_write(ns, new_root, [path], caller, now)
        old_root, ns.root = ns.root, new_root
        self.cancel_revoked(ns, now)
        self.notify_set(ns, old_root, new_root, path)
        return tree.get(new_root, path)

    def update(self, ns: _Namespace, path: Path, raw: dict[str, object], caller: _Caller) -> dict[str, object]:
        """Apply a multi-path update at ``path``, all or nothing; returns the stored value of each key."""
        now = _now_ms()
        subs = tree.update_paths(raw)
        new_root = tree.update_at(ns.root, path, raw, now_ms=now)
        self.check_write(ns, new_root, [path + sub for sub in subs], caller, now)
        old_root, ns.root = ns.root, new_root
        self.cancel_revoked(ns, now)
        self.notify_update(ns, old_root, new_root, path, subs)
        return {"/".join(sub): tree.get(new_root, path + sub) for sub in subs}

    # -- fan-out -----------------------------------------------------------------------------------------------
    #
    # For a write at P and a listener at L: when L is P or above it, the listener gets the change with a path
    # relative to L; when P is above L, it gets a put of its whole new value (only if that changed). Listeners
    # are grouped by path, so each event is encoded once per listened path however many clients listen there.

    def notify_set(self, ns: _Namespace, old_root: object, new_root: object, path: Path) -> None:
        if not ns.listeners and not ns.query_listeners:
            return
        old_value, new_value = tree.get(old_root, path), tree.get(new_root, path)
        if old_value is new_value or old_value == new_value:
            return
        depth = len(path)
        for lpath, group in list(ns.listeners.items()):
            n = len(lpath)
            if n <= depth and path[:n] == lpath:
                chunk = _sse("put", path[n:], new_value)
            elif path == lpath[:depth]:
                before, after = tree.get(old_root, lpath), tree.get(new_root, lpath)
                if before is after or before == after:
                    continue
                chunk = _sse("put", (), after)
            else:
                continue
            for listener in list(group):
                listener.push(chunk)
        self._notify_queries(ns, new_root, [path])

    def notify_update(self, ns: _Namespace, old_root: object, new_root: object, base: Path,
                      subs: list[Path]) -> None:
        if not ns.listeners and not ns.query_listeners:
            return
        old_value, new_value = tree.get(old_root, base), tree.get(new_root, base)
        if old_value is new_value or old_value == new_value:
            return
        depth = len(base)
        fulls = [base + sub for sub in subs]
        for lpath, group in list(ns.listeners.items()):
            n = len(lpath)
            if n <= depth and base[:n] == lpath:
                data = {"/".join(sub): tree.to_output(tree.get(new_value, sub)) for sub in subs}
                chunk = _patch(base[n:], data)
            elif base == lpath[:depth]:
                before, after = tree.get(old_root, lpath), tree.get(new_root, lpath)
                if before is after or before == after:
                    continue
                below = [full[n:] for full in fulls if len(full) > n and full[:n] == lpath]
                above = any(lpath[: len(full)] == full for full in fulls if len(full) <= n)
                if above or not below:
                    chunk = _sse("put", (), after)
                else:
                    chunk = _patch((), {"/".join(rel): tree.to_output(tree.get(after, rel)) for rel in below})
            else:
                continue
            for listener in list(group):
                listener.push(chunk)
        self._notify_queries(ns, new_root, fulls)

    def _notify_queries(self, ns: _Namespace, new_root: object, paths: list[Path]) -> None:
        for listener in list(ns.query_listeners):
            lpath = listener.path
            n = len(lpath)
            if not any(p[:n] == lpath or lpath[: len(p)] == p for p in paths):
                continue
            result = query.apply_query(tree.get(new_root, lpath), listener.query)
            if result != listener.last_result:
                listener.last_result = result
                listener.push(_sse("put", (), result))


def _patch(path: Path, data: dict[str, object]) -> bytes:
    payload = _dumps({"path": "/" + "/".join(path), "data": data})
    return b"event: patch\ndata: " + payload.encode() + b"\n\n"


class _ServerLog(logging.LoggerAdapter):
    """aiohttp's server log: a request it cannot parse (a request line over 8,190 bytes, a malformed header) is
    answered 400 by aiohttp and costs one warning line here instead of an ERROR with a traceback."""

    def exception(self, msg: object, *args: object, exc_info: object = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            reason = " ".join(str(exc_info.message).split())[:300]
            self.warning("refused a request it could not parse (%s): %s", exc_info.code, reason)
            return
        super().exception(msg, *args, exc_info=exc_info, **kwargs)


# -- request parsing -------------------------------------------------------------------------------------------


def _split_target(request: web.Request) -> tuple[str, dict[str, str]]:
    """The raw path and the query parameters, percent-decoded by hand.

    The SDK joins REST parameters without encoding them (``+`` stays a plus), while its listener lets requests
    form-encode them (a space becomes ``+``), so ``+`` means a space only on event-stream requests.
    """
    raw = request.raw_path
    raw_path, _, raw_query = raw.partition("?")
    decode = unquote_plus if "text/event-stream" in request.headers.get("Accept", "") else unquote
    params: dict[str, str] = {}
    if raw_query:
        for part in raw_query.split("&"):
            if not part:
                continue
            key, _, value = part.partition("=")
            try:
                params[unquote(key, errors="strict")] = decode(value, errors="strict")
            except UnicodeDecodeError:
                raise _HTTPError(400, f"Invalid query parameter {part[:100]!r}: it is not UTF-8 once "
                                      f"percent-decoded") from None
    return raw_path, params


_TIMEOUT_RE = re.compile(r"^([0-9]{1,9})(ms|s|min)$")
_TIMEOUT_MS = {"ms": 1, "s": 1000, "min": 60_000}
_MAX_TIMEOUT_MS = 15 * 60_000


def _check_params(params: Mapping[str, str]) -> None:
    """Refuse the service's own parameters with values it does not know (or this emulator does not do)."""
    printed = params.get("print")
    if printed is not None and printed not in ("pretty", "silent"):
        raise _HTTPError(400, f"print must be pretty or silent (print={printed[:100]})")
    fmt = params.get("format")
    if fmt == "export":
        raise _HTTPError(400, "format=export (values with their priorities) is not supported by this emulator")
    if fmt is not None:
        raise _HTTPError(400, f"format must be export (format={fmt[:100]})")
    timeout = params.get("timeout")
    if timeout is not None:
        match = _TIMEOUT_RE.match(timeout)
        if match is None or int(match[1]) * _TIMEOUT_MS[match[2]] > _MAX_TIMEOUT_MS:
            raise _HTTPError(400, f"timeout must be a number with a unit ms, s or min, at most 15min "
                                  f"(timeout={timeout[:100]})")


def _db_path(raw_path: str) -> Path:
    if not raw_path.endswith(".json"):
        raise _HTTPError(404, "Not found: use /<path>.json")
    try:
        raw = unquote(raw_path[: -len(".json")], errors="strict")
    except UnicodeDecodeError:
        raise _HTTPError(400, f"Invalid path: {raw_path[:200]!r} is not UTF-8 once percent-decoded") from None
    return tree.parse_path(raw)


def _namespace_name(request: web.Request, params: Mapping[str, str]) -> str:
    name = params.get("ns")
    if name is None:
        host = request.host.split(":")[0]
        label = host.split(".")[0]
        name = label if "." in host and not host.replace(".", "").isdigit() else DEFAULT_NAMESPACE
    if not _NAMESPACE_RE.match(name):
        raise _HTTPError(400, f"Invalid namespace name: {name!r}")
    return name


_override_cache: dict[str, _Caller] = {}


def _caller(request: web.Request, params: Mapping[str, str]) -> _Caller:
    override = params.get("auth_variable_override")
    if override is not None:
        cached = _override_cache.get(override)
        if cached is not None:
            return cached
        try:
            auth = json.loads(override)
        except ValueError:
            raise _HTTPError(400, "auth_variable_override must be a JSON object or null") from None
        if auth is not None and not isinstance(auth, dict):
            raise _HTTPError(400, "auth_variable_override must be a JSON object or null")
        caller = _Caller(False, auth)
        if len(_override_cache) > 1024:
            _override_cache.clear()
        _override_cache[override] = caller
        return caller
    token = params.get("auth")
    if token == "owner":  # as in a bearer header: the emulator's admin credential
        return _ADMIN
    if token is not None:
        return _Caller(False, _auth_from_id_token(token))
    authorization = request.headers.get("Authorization", "")
    if authorization[:7].lower() == "bearer " and authorization[7:].strip():
        return _ADMIN
    return _ANONYMOUS


def _auth_from_id_token(token: str) -> dict[str, object]:
    """Decode an ID token's payload without verifying it (as Google's emulator does): ``auth.uid`` = ``sub``."""
    parts = token.split(".")
    if len(parts) != 3:
        raise _HTTPError(401, "Could not parse auth token.")
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
    except (binascii.Error, ValueError):
        raise _HTTPError(401, "Could not parse auth token.") from None
    if not isinstance(claims, dict) or not isinstance(claims.get("sub") or claims.get("user_id"), str):
        raise _HTTPError(401, "Could not parse auth token.")
    uid = claims.get("sub") or claims.get("user_id")
    firebase = claims.get("firebase")
    provider = firebase.get("sign_in_provider", "custom") if isinstance(firebase, dict) else "custom"
    return {"uid": uid, "provider": provider, "token": claims}


def _json_response(status: int, body: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=body, content_type="application/json", charset="utf-8",
                        headers=headers)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return _json_response(status, _dumps({"error": message}), headers)


class _Server:
    """The aiohttp handlers around a :class:`Database`."""

    def __init__(self, db: Database, *, keepalive_interval: float, max_body_bytes: int) -> None:
        self.db = db
        self.keepalive_interval = keepalive_interval
        self.max_body_bytes = max_body_bytes
        self.open_streams: set[_Listener] = set()

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._dispatch(request)
        except _HTTPError as exc:
            return _error(exc.status, exc.message, exc.headers)
        except DataError as exc:
            return _error(400, str(exc))
        except RecursionError:
            return _error(400, "Data too deep: at most 32 levels of nesting are allowed.")
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"Request body too large: the limit is {self.max_body_bytes} bytes.")
        except ConnectionResetError:
            # The client went away mid-request (a killed process, a closed socket): nobody is left to answer.
            log.debug("client left during %s %s", request.method, request.raw_path)
            return web.Response(status=400)
        except Exception:
            log.exception("internal error answering %s %s", request.method, request.raw_path)
            return _error(500, "Internal error in the emulator (see its log).")

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raw_path, params = _split_target(request)
        method = request.method
        if raw_path == "/.settings/rules.json":
            return await self._rules(request, params)
        _check_params(params)
        if method == "GET" and "text/event-stream" in request.headers.get("Accept", ""):
            return await self._listen(request, raw_path, params)
        if method not in ("GET", "PUT", "POST", "PATCH", "DELETE"):
            raise _HTTPError(405, f"Method {method} is not supported.")
        # Read the body first: everything after it runs without awaiting, so each write is atomic.
        body = await self._body(request) if method in ("PUT", "POST", "PATCH") else None
        path = _db_path(raw_path)
        caller = _caller(request, params)
        ns = self.db.namespace(_namespace_name(request, params))
        silent = params.get("print") == "silent"
        if method == "GET":
            return self._get(request, ns, path, params, caller, silent)
        if method == "DELETE":
            self.db.set(ns, path, None, caller)
            return web.Response(status=204) if silent else _json_response(200, "null")
        value = _parse_json(body)
        if method == "PUT":
            return self._put(request, ns, path, value, caller, silent)
        if method == "POST":
            name = self.db.push_ids(_now_ms())
            self.db.set(ns, path + (name,), value, caller)
            return web.Response(status=204) if silent else _json_response(200, _dumps({"name": name}))
        if not isinstance(value, dict):
            raise _HTTPError(400, _PATCH_NOT_OBJECT)
        written = self.db.update(ns, path, value, caller)
        if silent:
            return web.Response(status=204)
        return _json_response(200, _dumps({k: tree.to_output(v) for k, v in written.items()}))

    async def _body(self, request: web.Request) -> bytes:
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            raise web.HTTPRequestEntityTooLarge(max_size=self.max_body_bytes, actual_size=length)
        return await request.read()

    def _get(self, request: web.Request, ns: _Namespace, path: Path, params: Mapping[str, str],
             caller: _Caller, silent: bool) -> web.StreamResponse:
        query_params = {k: params[k] for k in _QUERY_KEYS if k in params}
        shallow = params.get("shallow")
        if shallow is not None and shallow not in ("true", "false"):
            raise _HTTPError(400, "shallow must be true or false")
        if shallow == "true" and query_params:
            raise _HTTPError(400, "Mixing shallow with other query parameters is not allowed")
        q = query.parse_query(query_params) if query_params else None
        self.db.check_read(ns, path, caller, q)
        if q is not None:
            self.db.warn_missing_index(ns, path, q)
        value = tree.get(ns.root, path)
        headers: dict[str, str] = {}
        want_etag = request.headers.get("X-Firebase-ETag", "").lower() == "true"
        if_none_match = request.headers.get("if-none-match")
        if want_etag or if_none_match is not None:
            tag = tree.etag(value)
            if if_none_match is not None and if_none_match == tag:
                return web.Response(status=304, headers={"ETag": tag})
            headers["ETag"] = tag
        if silent:
            return web.Response(status=204, headers=headers)
        if shallow == "true":
            out = tree.shallow(value)
        elif q is not None:
            out = query.apply_query(value, q)
        else:
            out = value
        return _json_response(200, _dumps(tree.to_output(out)), headers)

    def _put(self, request: web.Request, ns: _Namespace, path: Path, value: object, caller: _Caller,
             silent: bool) -> web.StreamResponse:
        if_match = request.headers.get("if-match")
        if if_match is not None:
            current = tree.get(ns.root, path)
            tag = tree.etag(current)
            if if_match != tag:
                self.db.check_read(ns, path, caller)
                return _json_response(412, _dumps(tree.to_output(current)), {"ETag": tag})
        stored = self.db.set(ns, path, value, caller)
        headers = {}
        if if_match is not None or request.headers.get("X-Firebase-ETag", "").lower() == "true":
            headers["ETag"] = tree.etag(stored)
        if silent:
            return web.Response(status=204, headers=headers)
        return _json_response(200, _dumps(tree.to_output(stored)), headers)

    async def _rules(self, request: web.Request, params: Mapping[str, str]) -> web.StreamResponse:
        body = await self._body(request) if request.method == "PUT" else None
        caller = _caller(request, params)
        name = _namespace_name(request, params)
        if not caller.admin:
            raise _HTTPError(401, _PERMISSION_DENIED)
        if request.method == "GET":
            ns = self.db.namespaces.get(name)
            ruleset = self.db.rules_of(ns) if ns is not None else self.db.default_rules
            if ruleset is None:
                return _json_response(200, _dumps(_ALLOW_ALL_RULES))
            text = ns.rules_text if ns is not None and ns.rules is not None else self.db.default_rules_text
            if params.get("format") != "strict" and text is not None:
                return web.Response(status=200, text=text, content_type="application/json", charset="utf-8")
            return _json_response(200, _dumps(_rules_json(ruleset)))
        if request.method != "PUT":
            raise _HTTPError(405, f"Method {request.method} is not supported on rules.")
        assert body is not None
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise _HTTPError(400, "Parse error: the rules are not valid UTF-8") from None
        try:
            ruleset = RuleSet.from_text(text)
        except RulesParseError as exc:
            raise _HTTPError(400, str(exc)) from None
        self.db.set_rules(ruleset, text, name)
        return _json_response(200, _dumps({"status": "ok"}))

    async def _listen(self, request: web.Request, raw_path: str, params: Mapping[str, str]) -> web.StreamResponse:
        path = _db_path(raw_path)
        caller = _caller(request, params)
        ns = self.db.namespace(_namespace_name(request, params))
        query_params = {k: params[k] for k in _QUERY_KEYS if k in params}
        q = query.parse_query(query_params) if query_params else None
        self.db.check_read(ns, path, caller, q)
        if q is not None:
            self.db.warn_missing_index(ns, path, q)
        listener = _Listener(path, q, caller, self.db.listener_buffer_bytes)
        # The first event and the registration happen in the same step, so no write falls between them.
        value = tree.get(ns.root, path)
        if q is not None:
            value = listener.last_result = query.apply_query(value, q)
        listener.push(_sse("put", (), value))
        ns.add(listener)
        self.open_streams.add(listener)
        response = web.StreamResponse(status=200, headers={"Content-Type": _SSE_CONTENT_TYPE,
                                                           "Cache-Control": "no-cache"})
        try:
            listener.transport = request.transport
            if listener.dropped or request.transport is None:
                return response
            await response.prepare(request)
            await self._pump(listener, response)
        except ConnectionError:  # the client went away
            listener.dropped = True
        finally:
            ns.remove(listener)
            self.open_streams.discard(listener)
        return response

    async def _pump(self, listener: _Listener, response: web.StreamResponse) -> None:
        while True:
            if listener.dropped:
                return
            if listener.chunks:
                data = b"".join(listener.chunks)
                listener.chunks.clear()
                listener.queued = 0
                await response.write(data)
                continue
            if listener.closing:
                await response.write_eof()
                return
            listener.wake.clear()
            try:
                async with asyncio.timeout(self.keepalive_interval):
                    await listener.wake.wait()
            except TimeoutError:
                await response.write(_KEEPALIVE)

    def close_streams(self) -> None:
        for listener in list(self.open_streams):
            listener.drop()


def _parse_json(body: bytes | None) -> object:
    try:
        return json.loads(body or b"")
    except RecursionError:
        raise DataError("Data too deep: at most 32 levels of nesting are allowed.") from None
    except ValueError:
        raise _HTTPError(400, _JSON_PARSE_ERROR) from None


def _rules_json(ruleset: RuleSet) -> object:
    out = ruleset.to_json()
    if isinstance(out, dict) and set(out) == {"rules"}:
        return out
    return {"rules": out}


class Emulator:
    """A running Realtime Database emulator: ``async with Emulator() as emu:`` or ``with Emulator.in_thread():``.

    ``stop()`` then ``start()`` restarts it on the same port with its data kept (open streams are cut), so tests
    can simulate a relay outage.

    Args:
        host: the address to listen on (loopback by default).
        port: the port; 0 picks a free one (kept for restarts).
        rules: the default rules of every namespace (see :func:`load_ruleset`); None allows everything.
        keepalive_interval: seconds between keep-alive events on an idle stream.
        max_body_bytes: a larger request body is refused with 413.
        listener_buffer_bytes: a listener with more unsent events than this is dropped.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 rules: str | FilePath | Mapping[str, Any] | RuleSet | None = None,
                 keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 listener_buffer_bytes: int = DEFAULT_LISTENER_BUFFER_BYTES) -> None:
        self.host = host
        self.port = port
        self.database = Database(listener_buffer_bytes=listener_buffer_bytes)
        if rules is not None:
            self.database.set_rules(*load_ruleset(rules), None)
        self._server = _Server(self.database, keepalive_interval=keepalive_interval,
                               max_body_bytes=max_body_bytes)
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._thread_stop: asyncio.Event | None = None

    # -- addresses ---------------------------------------------------------------------------------------------

    @property
    def host_port(self) -> str:
        """``"127.0.0.1:PORT"``: the value for ``FIREBASE_DATABASE_EMULATOR_HOST``."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host_port}"

    def database_url(self, namespace: str) -> str:
        """The ``databaseURL`` that points firebase-admin at ``namespace`` of this emulator."""
        return f"{self.url}?ns={namespace}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    # -- lifecycle on the caller's loop ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start serving (again, on the same port after a stop). Raises OSError when the port is taken."""
        if self._runner is not None:
            return
        runner = web.AppRunner(self._server.make_app(), access_log=None, shutdown_timeout=1.0,
                               handle_signals=False, logger=_ServerLog(log))
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self._runner = runner
        self._loop = asyncio.get_running_loop()

    async def stop(self) -> None:
        """Stop serving and cut open streams; the data and rules are kept for the next ``start()``."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._server.close_streams()
        await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- lifecycle in a background thread ----------------------------------------------------------------------

    def start_in_thread(self) -> Self:
        """Run the emulator on its own event loop in a daemon thread; returns once it accepts connections."""
        if self._thread is not None:
            return self
        started: threading.Event = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            async def main() -> None:
                self._thread_stop = asyncio.Event()
                try:
                    await self.start()
                except BaseException as exc:
                    failure.append(exc)
                    started.set()
                    return
                started.set()
                await self._thread_stop.wait()
                await self.stop()

            asyncio.run(main())

        thread = threading.Thread(target=run, name=f"emulator-{self.port}", daemon=True)
        thread.start()
        started.wait()
        if failure:
            thread.join()
            raise failure[0]
        self._thread = thread
        return self

    def stop_in_thread(self) -> None:
        """Stop an emulator started with :meth:`start_in_thread` (it can be started again, same port and data)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, stop = self._loop, self._thread_stop
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        thread.join()

    @classmethod
    @contextlib.contextmanager
    def in_thread(cls, *args: Any, **kwargs: Any) -> Iterator[Emulator]:
        """``with Emulator.in_thread(...) as emu:`` runs an emulator in a background thread for the block."""
        emulator = cls(*args, **kwargs)
        emulator.start_in_thread()
        try:
            yield emulator
        finally:
            emulator.stop_in_thread()

    # -- data and rules ----------------------------------------------------------------------------------------

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` where the database lives: on the emulator's thread when it runs in one."""
        loop = self._loop
        if self._thread is not None and loop is not None and threading.current_thread() is not self._thread:
            async def call() -> Any:
                return fn()

            return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=30)
        return fn()

    def load_rules(self, rules: str | FilePath | Mapping[str, Any] | RuleSet | None,
                   namespace: str | None = None) -> None:
        """Replace the rules of ``namespace`` (None: the default of every namespace without rules of its own).

        Listeners that may no longer read get a ``cancel`` event and their stream ends.

        Raises:
            RulesParseError: the rules are invalid (nothing changes).
        """
        ruleset, text = load_ruleset(rules)
        self._call(lambda: self.database.set_rules(ruleset, text, namespace))

    def clear(self, namespace: str) -> None:
        """Delete all data of ``namespace`` (its rules stay); its listeners see a ``null`` put."""
        self._call(lambda: self.database.clear(namespace))

    def get(self, namespace: str, path: str = "/") -> object:
        """The value at ``path`` of ``namespace`` as JSON output (a test helper; no rules apply)."""
        parsed = tree.parse_path(path)
        return self._call(lambda: tree.to_output(tree.get(self.database.namespace(namespace).root, parsed)))


def run_emulator(host: str = "127.0.0.1", port: int = DEFAULT_PORT, *, rules: str | FilePath | None = None,
                 keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL,
                 print_line: Callable[[str], None] = print,
                 print_error: Callable[[str], None] | None = None) -> int:
    """Serve until SIGINT or SIGTERM, for the command line; returns the exit code (0, or 2 when it cannot start).

    Every problem is said in one line (a taken port, unreadable or invalid rules), never as a traceback.
    """
    if print_error is None:
        print_error = print_line
    try:
        emulator = Emulator(host, port, rules=rules, keepalive_interval=keepalive_interval)
    except RulesParseError as exc:
        print_error(f"error: invalid rules in {rules}: {exc}")
        return 2
    except OSError as exc:
        print_error(f"error: cannot read the rules file {rules}: {exc.strerror or exc}")
        return 2

    async def serve() -> int:
        try:
            await emulator.start()
        except OSError as exc:
            if exc.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
                print_error(f"error: port {port} on {host} is already in use (choose another with --port)")
            else:
                print_error(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}")
            return 2
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stop.set)
        print_line(f"Realtime Database emulator listening on {emulator.url}"
                   + (f" with the rules of {rules}" if rules else " (no rules: everything is allowed)"))
        print_line(f"export FIREBASE_DATABASE_EMULATOR_HOST={emulator.host_port}")
        print_line("Press Ctrl-C to stop.")
        try:
            await stop.wait()
        finally:
            await emulator.stop()
        print_line("Emulator stopped.")
        return 0

    try:
        return asyncio.run(serve())
    except KeyboardInterrupt:
        return 0
