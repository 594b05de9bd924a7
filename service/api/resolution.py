"""From an HTTP request to resolved specs and a file plan, every check done before any byte.

GET query strings and POST bodies become the same JSON document, validated by the
same request models and resolved by the same engine call, so the two forms give the
same bytes. Order of checks: body size (while reading) → JSON → content type → request
models → engine resolution (values, shape, per-tensor limits) → response-size limits.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import re
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote

from pydantic import ValidationError
from starlette.requests import Request

from service.core import (
    ALGORITHM_VERSION,
    LimitExceededError,
    ResolvedSpec,
    Tensor,
    TensorinitError,
    UnknownSchemeError,
    canonical_json,
    lookup,
    resolve,
)
from service.core.costs import matrix_flops
from service.core.errors import UncoveredTensorsError
from service.core.recipes import RecipePlan, plan_recipe
from service.safetensors_stream import Plan, file_order_key

from .models import INIT_ADAPTER, BatchRequest, RecipeRequest, TensorBase
from .offload import off_loop
from .problems import ProblemError, from_engine, from_pydantic
from .settings import Settings

TENSOR_FIELDS = frozenset(
    {"scheme", "shape", "seed", "dtype", "name", "convention", "algorithm", "slice", "in_axes", "out_axes", "batch_axes"}
)
LIST_FIELDS = frozenset({"shape", "in_axes", "out_axes", "batch_axes"})
DEFAULT_BINS = 64


@dataclass(frozen=True)
class Prepared:
    """A validated request: resolved specs in file order, the file plan, its ETag and file name."""

    specs: tuple[ResolvedSpec, ...]
    plan: Plan
    metadata: str
    etag: str
    filename: str

    @property
    def size(self) -> int:
        return self.plan.size


# -- reading the request ----------------------------------------------------------------


def _no_constants(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request body as JSON; 413 as soon as it grows past ``max_bytes``, 400 if not JSON."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype and not ctype.endswith("json"):
        raise ProblemError(
            "unsupported-media-type",
            f"the body must be JSON (Content-Type: application/json), got {ctype!r}; with curl use --json or -H 'Content-Type: application/json'",
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(int(declared), max_bytes)
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise _too_large(total, max_bytes)
        chunks.append(chunk)
    body = b"".join(chunks)
    if len(body) <= INLINE_JSON_BYTES:
        return _parse_json(body)
    return await off_loop(_parse_json, body)  # up to max_body_bytes: milliseconds, off the event loop


INLINE_JSON_BYTES = 64 << 10
"""Bodies up to this size are parsed on the event loop (well under a millisecond); larger ones on a thread."""


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise ProblemError("malformed-json", f"the request body is not valid JSON: {str(err)[:200]}") from None


def _too_large(size: int, limit: int) -> ProblemError:
    return ProblemError(
        "body-too-large",
        f"the request body has at least {size} bytes; the limit max_body_bytes is {limit} (env TENSORINIT_MAX_BODY_BYTES)",
        limit_name="max_body_bytes",
        limit=limit,
    )


_INTEGER = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
"""Numbers in a query are spelled as in JSON (a leading point or a trailing one aside), in ASCII digits only.

Python's ``int()`` and ``float()`` are more generous: they take ``+7``, `` 7``, ``7_0`` (as 70)
and other scripts' digits (``٧``); a query that spells a number so is refused, as the
body's JSON parser refuses it (``fullmatch``: ``$`` would let a final newline through).
"""


def _coerce(raw: str, kind: str) -> Any:
    """A query-string value as the JSON value it stands for; left a string (refused by the models) when it does not parse."""
    if kind == "integer":
        # "" or "null" is not an integer: refused, as the document says. Over 4300 digits int() refuses too.
        with contextlib.suppress(ValueError):
            return int(raw) if _INTEGER.fullmatch(raw) else raw
        return raw
    if kind == "number":
        return float(raw) if _NUMBER.fullmatch(raw) else raw  # also leaves nan and inf out, as JSON does
    if kind == "boolean":
        return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(raw.lower(), raw)
    if kind == "list":
        return [] if raw == "" else [_coerce(item, "integer") for item in raw.split(",")]
    return raw


def query_items(query_string: bytes, scheme: str | None = None) -> list[tuple[str, str]]:
    """The items of a GET query string (as Starlette's QueryParams parses them); with ``scheme``, that of the path first.

    The per-scheme form (``/init/<scheme>``) names the scheme in its path, so the query
    may not name one again.
    """
    items = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    if scheme is None:
        return items
    if any(key == "scheme" for key, _ in items):
        raise ProblemError(
            "unknown-parameter",
            f"scheme: the path names the scheme ({scheme}); the query may not name it again",
            errors=[{"path": ["scheme"], "message": "given in the path", "allowed": f"no scheme parameter on /…/{scheme}"}],
        )
    return [("scheme", scheme), *items]


def query_document(items: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """A GET query string as the JSON document of the equivalent POST (single tensor)."""
    raw: dict[str, str] = {}
    for key, value in items:
        if key in raw:
            raise ProblemError(
                "validation-error",
                f"{key}: given more than once",
                errors=[{"path": [key], "message": "given more than once", "allowed": "one value"}],
            )
        raw[key] = value
    kinds: dict[str, str] = {"seed": "integer", "bins": "integer", "algorithm": "integer", **dict.fromkeys(LIST_FIELDS, "list")}
    with contextlib.suppress(UnknownSchemeError):  # reported by validation, with suggestions
        kinds.update({p.name: p.type for p in lookup(raw.get("scheme", "")).params})
    return {key: _coerce(value, kinds.get(key, "string")) for key, value in raw.items()}


# -- validation and resolution -------------------------------------------------------------


def validate(document: Any) -> TensorBase | BatchRequest | RecipeRequest:
    """The request models' verdict on a JSON document (422 naming every offending field)."""
    try:
        parsed: TensorBase | BatchRequest | RecipeRequest = INIT_ADAPTER.validate_python(document)
    except ValidationError as err:
        raise from_pydantic(err.errors()) from None
    return parsed


def _resolve_one(model: TensorBase, settings: Settings, *, name: str | None, defaults: dict[str, Any]) -> ResolvedSpec:
    given = model.model_fields_set
    fields = {k: getattr(model, k) for k in given}
    options = {k: v for k, v in defaults.items() if v is not None}
    options.update(
        {
            k: fields[k]
            for k in ("seed", "dtype", "convention", "algorithm", "slice", "in_axes", "out_axes", "batch_axes")
            if k in given and fields[k] is not None
        }
    )
    if name is not None:
        options["name"] = name
    elif fields.get("name") is not None:
        options["name"] = fields["name"]
    params = {k: v for k, v in fields.items() if k not in TENSOR_FIELDS}
    return resolve(str(fields["scheme"]), model.shape, params=params, limits=settings.engine_limits, **options)


def resolve_recipe(parsed: RecipeRequest, settings: Settings) -> RecipePlan:
    """A recipe request's plan (service.core.recipes); engine errors become 422/413 at the path they are about."""
    if len(parsed.tensors) > settings.max_batch_tensors:
        count = f"<{len(parsed.tensors)} tensors>"
        raise from_engine(LimitExceededError("tensors", count, "max_batch_tensors", settings.max_batch_tensors)) from None
    try:
        plan = plan_recipe(
            parsed.recipe,
            {name: entry.model_dump(exclude_none=True) for name, entry in parsed.tensors.items()},
            recipe_params=parsed.recipe_params,
            seed=0 if parsed.seed is None else parsed.seed,
            dtype=parsed.dtype,
            convention=parsed.convention,
            algorithm=parsed.algorithm,
            roles=parsed.roles,
            rules=parsed.rules,
            limits=settings.engine_limits,
        )
    except UncoveredTensorsError as err:
        allowed = err.allowed
        errors = [
            {"path": ["tensors", name], "message": f"not covered by recipe {parsed.recipe} or a rule", "allowed": allowed}
            for name in err.names
        ]
        raise ProblemError("validation-error", err.message, errors=errors) from None
    except TensorinitError as err:
        raise from_engine(err, getattr(err, "where", ())) from None
    if not plan.specs:
        raise ProblemError(
            "validation-error",
            "tensors: the rules leave every tensor out",
            errors=[{"path": ["tensors"], "message": "no tensors left", "allowed": "at least one tensor not skipped by a null rule"}],
        )
    return plan


def resolve_document(parsed: TensorBase | BatchRequest | RecipeRequest, settings: Settings) -> list[ResolvedSpec]:
    """Resolved specs of a validated request; engine errors become 422/413 naming the field."""
    if isinstance(parsed, RecipeRequest):
        return resolve_recipe(parsed, settings).specs
    if isinstance(parsed, TensorBase):
        try:
            spec = _resolve_one(parsed, settings, name=None, defaults={})
        except TensorinitError as err:
            raise from_engine(err) from None
        return [spec]
    if not parsed.tensors:
        raise ProblemError(
            "validation-error", "tensors: empty", errors=[{"path": ["tensors"], "message": "no tensors", "allowed": "at least one tensor"}]
        )
    if len(parsed.tensors) > settings.max_batch_tensors:
        count = f"<{len(parsed.tensors)} tensors>"
        raise from_engine(LimitExceededError("tensors", count, "max_batch_tensors", settings.max_batch_tensors)) from None
    defaults = {"seed": parsed.seed, "dtype": parsed.dtype, "convention": parsed.convention, "algorithm": parsed.algorithm}
    specs: list[ResolvedSpec] = []
    seen: dict[str, str] = {}
    too_large: ProblemError | None = None  # reported once every tensor is known to be valid
    for key, model in parsed.tensors.items():
        if model.name is not None:
            raise ProblemError(
                "unknown-parameter",
                f"tensors/{key}/name: a batch tensor takes its name from its key",
                errors=[
                    {"path": ["tensors", key, "name"], "message": "not allowed in a batch", "allowed": "no name field: the key is the name"}
                ],
            )
        try:
            spec = _resolve_one(model, settings, name=key, defaults=defaults)
        except TensorinitError as err:
            # A top-level default that the tensor did not override is reported where it was given.
            inherited = err.param in defaults and err.param not in model.model_fields_set
            problem = from_engine(err, () if inherited else ("tensors", key))
            if not isinstance(err, LimitExceededError):
                raise problem from None
            too_large = too_large or problem
            continue
        if spec.name in seen:
            raise ProblemError(
                "validation-error",
                f"tensors/{key}: the same name as {seen[spec.name]!r} after Unicode NFC normalization",
                errors=[{"path": ["tensors", key], "message": "duplicate name", "allowed": "distinct names"}],
            )
        seen[spec.name] = key
        specs.append(spec)
    if too_large is not None:
        raise too_large
    versions = sorted({spec.algorithm for spec in specs})
    if len(versions) > 1:
        raise ProblemError(
            "validation-error",
            f"algorithm: one file is made by one algorithm, got {versions}",
            errors=[{"path": ["algorithm"], "message": f"tensors ask for algorithms {versions}", "allowed": "one algorithm per request"}],
        )
    return specs


def metadata_json(specs: Iterable[ResolvedSpec]) -> str:
    """The canonical JSON of the resolved specs in file order: the file's metadata and the ETag's preimage."""
    dicts = [s.to_dict() for s in specs]
    return canonical_json({"algorithm": dicts[0]["algorithm"] if dicts else ALGORITHM_VERSION, "specs": dicts})


def _filename(specs: list[ResolvedSpec]) -> str:
    return f"{specs[0].name}.safetensors" if len(specs) == 1 else "tensors.safetensors"


@functools.lru_cache(maxsize=1024)
def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII-safe ``filename`` and, if it had to change, the exact ``filename*``."""
    plain = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    plain = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in plain).strip("._") or "tensor"
    if not plain.endswith(".safetensors"):
        plain += ".safetensors"
    value = f'attachment; filename="{plain}"'
    if plain != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value


def _check_size(specs: list[ResolvedSpec], settings: Settings) -> None:
    total = sum(s.nbytes for s in specs)
    if total > settings.max_response_bytes:
        raise ProblemError(
            "limit-exceeded",
            f"the response would hold {total} bytes of tensor data; the limit max_response_bytes is {settings.max_response_bytes}",
            errors=[
                {
                    "path": [],
                    "message": "response too large",
                    "allowed": f"at most {settings.max_response_bytes} bytes (max_response_bytes)",
                }
            ],
            limit_name="max_response_bytes",
            limit=settings.max_response_bytes,
        )


def _check_matrices(specs: list[ResolvedSpec], settings: Settings) -> None:
    # Issue 17: an orthogonal matrix is computed whole before its first byte, at a cost that
    # grows as rows·cols·min (a 4096² is 16 s of two cores); a batch of them, before any work.
    flops = sum(matrix_flops(s) for s in specs)
    if flops > settings.max_matrix_flops:
        value = f"<{flops} operations: the orthogonal matrices of {len(specs)} tensors>"
        raise from_engine(LimitExceededError("shape", value, "max_matrix_flops", settings.max_matrix_flops)) from None


def plan_for(specs: list[ResolvedSpec], settings: Settings) -> Prepared:
    """The file plan: the header and where each tensor's data lies (no number is drawn)."""
    _check_size(specs, settings)
    _check_matrices(specs, settings)
    ordered = sorted(specs, key=lambda s: file_order_key(s.safetensors_dtype, s.name))
    meta = metadata_json(ordered)
    plan = Plan([Tensor(s) for s in ordered], {"tensorinit": meta})
    if plan.size > settings.max_response_bytes:
        raise ProblemError(
            "limit-exceeded",
            f"the response would be {plan.size} bytes; the limit max_response_bytes is {settings.max_response_bytes}",
            limit_name="max_response_bytes",
            limit=settings.max_response_bytes,
        )
    return Prepared(tuple(ordered), plan, meta, etag_of(meta), _filename(specs))


def etag_of(metadata: str) -> str:
    """The strong ETag of a file: sha256 of its canonical metadata (the resolved specs and the algorithm)."""
    return '"' + hashlib.sha256(metadata.encode()).hexdigest() + '"'


async def prepare(document: Any, settings: Settings) -> Prepared:
    """Validate, resolve and plan a request document; raises ProblemError before any byte is sent."""
    if isinstance(document, dict) and "tensors" in document:
        # A batch or a recipe: work that grows with the request (up to max_batch_tensors
        # tensors and max_rules rules: seconds of CPU) runs on a thread, keeping the
        # event loop free for everyone else (issue 17).
        return await off_loop(prepare_now, document, settings)
    return prepare_now(document, settings)


def prepare_now(document: Any, settings: Settings) -> Prepared:
    """:func:`prepare` on the calling thread."""
    return plan_for(resolve_document(validate(document), settings), settings)


# -- GET /init: the same request with another seed ----------------------------------------


class SeedTemplate:
    """A single-tensor request prepared once, with its seed left open.

    Resolution does not depend on the seed: it is checked, then copied into the spec.
    Everything else, validation, resolution, limits, the file name, is done once by
    :func:`prepare`; :meth:`prepare` fills in a seed. The metadata JSON is split at
    its one ``"seed":`` key (inside a JSON string a quote is always escaped, so no
    name can contain that text), and the header JSON at the same text escaped once
    more (a name that holds it there makes no template), so the metadata, the ETag
    and the file header are the very strings a fresh :func:`prepare` makes for that
    seed; a test holds the two paths to the same bytes.
    """

    __slots__ = ("_header", "_meta", "_prepared")

    def __init__(self, prepared: Prepared):
        (spec,) = prepared.specs
        marker = f'"seed":{spec.seed},'
        self._prepared = prepared
        self._meta = _split_once(prepared.metadata, marker, '"seed":')
        escaped = json.dumps(marker)[1:-1]
        self._header = _split_once(prepared.plan.header_json.decode("utf-8"), escaped, json.dumps('"seed":')[1:-1])

    @staticmethod
    def applies(prepared: Prepared) -> bool:
        """Whether ``prepared`` can be a template: a file of one tensor."""
        return len(prepared.specs) == 1

    def prepare(self, seed: int) -> Prepared:
        """What :func:`prepare` gives for the same request with ``seed`` (0 ≤ seed < 2^64)."""
        template = self._prepared
        spec = template.specs[0].with_seed(seed)
        meta = f"{self._meta[0]}{seed}{self._meta[1]}"
        header = f"{self._header[0]}{seed}{self._header[1]}".encode()
        plan = Plan.from_header_json(header, [template.plan.entries[0].tensor.reseeded(spec)])
        return Prepared((spec,), plan, meta, etag_of(meta), template.filename)


def _split_once(text: str, marker: str, key: str) -> tuple[str, str]:
    """``text`` around ``marker`` (ending in the seed's digits and a comma), checked to hold ``key`` exactly once."""
    before, found, after = text.partition(marker)
    if not found or key in before or key in after:
        raise ValueError(f"{key!r} is not in the text exactly once")
    return before + marker[: marker.index(":") + 1], marker[-1] + after


class QueryTemplates:
    """Seed templates of recent single-tensor GET queries, least recently used first out.

    Keyed by the query's items other than ``seed``, exactly as sent. Only a plain
    decimal seed (ASCII digits, below 2^64) takes the template; any other seed, or a
    query seen for the first time, goes through :func:`prepare`, which validates and
    reports it in full. At most ``max_entries`` templates of queries up to
    ``max_key_chars`` characters are kept.
    """

    def __init__(self, settings: Settings, max_entries: int = 1024, max_key_chars: int = 2048):
        self.settings = settings
        self.max_entries = max_entries
        self.max_key_chars = max_key_chars
        self._templates: OrderedDict[tuple[tuple[str, str], ...], SeedTemplate] = OrderedDict()

    def __len__(self) -> int:
        return len(self._templates)

    async def prepare(self, items: Sequence[tuple[str, str]], settings: Settings | None = None) -> Prepared:
        """:func:`prepare` of the query ``items``, through a template when one fits.

        ``settings`` (default: those given at construction) replace the templates' when
        they differ: templates made under other limits are dropped.
        """
        if settings is not None and settings is not self.settings:
            self.settings = settings
            self._templates.clear()
        seeds = [value for key, value in items if key == "seed"]
        rest = tuple((key, value) for key, value in items if key != "seed")
        seed = _plain_seed(seeds[0]) if len(seeds) == 1 else 0 if not seeds else None
        template = self._templates.get(rest)
        if template is not None and seed is not None:
            self._templates.move_to_end(rest)
            prepared = template.prepare(seed)
            # The header holds the seed's digits: a longer seed can take a file that was
            # just within max_response_bytes over it. The general path says so.
            if prepared.size <= self.settings.max_response_bytes:
                return prepared
        prepared = await prepare(query_document(items), self.settings)
        if SeedTemplate.applies(prepared) and sum(len(k) + len(v) for k, v in rest) <= self.max_key_chars:
            with contextlib.suppress(ValueError):  # a name holding the seed's key text: no template
                self._templates[rest] = SeedTemplate(prepared)
                if len(self._templates) > self.max_entries:
                    self._templates.popitem(last=False)
        return prepared


def _plain_seed(raw: str) -> int | None:
    if raw.isascii() and raw.isdigit() and len(raw) <= 20 and (seed := int(raw)) < 1 << 64:
        return seed
    return None
