"""What a contract run counts as a positive example, and which refusals the document cannot state.

Shared by the in-process run (test_contract.py), which sets those refusals aside, and the
run from outside (test_contract_outside.py), which sends them and counts them by
:data:`UNSTATEABLE` rule.

JSON Schema states types, enums and bounds, and the document states them exactly,
query forms included: the flat GET form documents only what every scheme takes, the
per-scheme forms (``/init/he_normal``, ``/stats/he_normal``, ...) exactly that scheme's
parameters. It cannot state the engine's rules that tie fields together (``low <
high``, ``groups`` dividing the output channels, axes within the rank, the rank a
scheme needs under a convention, a ``slice`` within the shape), nor the size limits,
which bound a product of dimensions and are configuration (413). A schema-valid
request that the service refuses for one of those reasons alone is not a positive
example, so :func:`refused_beyond_schema` takes it out of the positive set; it asks the
service's own resolution, never the response. Anything the request models refuse stays
in: a document that promises more than the models accept is a contract bug. Negative
examples are never filtered.

Which operations resolve, and how, is read off the OpenAPI document (:func:`operation_kinds`),
not off their paths or operation ids: every operation that documents a 413 is one the
service can refuse beyond the schema, and one this filter must know how to ask about, so a
renamed or new one fails the run instead of escaping the filter and the budget.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import requests
import schemathesis

from service.api.docs import REF
from service.api.openapi_export import document as openapi_document
from service.api.problems import ProblemError
from service.api.resolution import plan_for, query_document, resolve_document, validate
from service.api.routes import models
from service.api.routes.propagation import TOP_FIELDS, networks_of
from service.api.settings import Settings
from service.core import TensorinitError
from service.core.architectures import manifest_from_config
from service.core.costs import stats_flops

Kind = Literal["tensors", "stats", "plan", "network", "manifest", "checkpoint"]
"""How an operation's request is resolved: tensors served as bytes, tensors summarized
(statistics, with ``bins``), a recipe's plan (nothing generated), a /propagation network,
a config's tensor list (POST /models/manifest: nothing generated), or a model's checkpoint
(its plan, one of its files, or the Hub protocol's view of it)."""


@dataclass(frozen=True)
class Operation:
    """An operation the service can refuse beyond the schema: its :data:`Kind`, and the scheme its path names, if any."""

    kind: Kind
    scheme: str | None = None  # a per-scheme query form (/init/<scheme>) names it in the path, not in a parameter


@functools.cache
def operation_kinds() -> dict[tuple[str, str], Operation]:
    """``(METHOD, path template)`` of every operation that documents a 413, and its :class:`Operation`, from the document.

    A tensor request is a body of ``InitRequest`` or a query with ``shape``; its answer is
    the tensor (``application/octet-stream``) or statistics of it. A ``RecipeRequest`` body is
    a plan; a body whose fields are /propagation's is a network; a body of one field, ``config``, is a
    model's manifest (POST /models/manifest). Any other operation with a
    413 is an error here: the filter would not know what it refuses, nor what it costs.
    """
    kinds: dict[tuple[str, str], Operation] = {}
    for path, operations in openapi_document()["paths"].items():
        for method, operation in operations.items():
            if "413" not in operation["responses"]:
                continue
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            params = {p["name"] for p in operation.get("parameters", [])}
            answers = operation["responses"].get("200", {}).get("content", {})
            kind: Kind
            if body.get("$ref") == REF.format(model="InitRequest") or "shape" in params:
                kind = "tensors" if "application/octet-stream" in answers else "stats"
            elif body.get("$ref") == REF.format(model="RecipeRequest"):
                kind = "plan"
            elif set(body.get("properties", {})) == TOP_FIELDS:
                kind = "network"
            elif set(body.get("properties", {})) == {"config"}:
                kind = "manifest"
            elif body.get("$ref") == REF.format(model="CheckpointRequest") or "max_shard_size" in params:
                kind = "checkpoint"
            else:
                raise ValueError(f"{method.upper()} {path} documents a 413, but its request is none that the contract filter resolves")
            named = "shape" in params and "scheme" not in params
            kinds[(method.upper(), path)] = Operation(kind, path.rsplit("/", 1)[1] if named else None)
    return kinds


def _query_items(query: dict[str, Any]) -> list[tuple[str, str]]:
    """The query as the server receives it: encoded by requests, as schemathesis sends it.

    Not rebuilt by hand: requests drops None and empty containers and repeats the items
    of a list or the keys of a dict, so a negative case whose only violation is
    ``gain={}`` arrives as a valid query without ``gain`` (and may ask for gigabytes).
    """
    url = requests.Request("GET", "http://contract.invalid/", params=query).prepare().url or ""
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def refused_beyond_schema(case: schemathesis.Case[Any], settings: Settings) -> bool:
    """Whether a server with ``settings`` refuses this request for a reason JSON Schema cannot state (see the module doc)."""
    return _accepted_bytes(case, settings) is None


def _accepted_bytes(case: schemathesis.Case[Any], settings: Settings) -> int | None:
    """The bytes a server with ``settings`` would generate for this request; None when it refuses it beyond the schema.

    0 when it is not a generating request, or one the request models refuse.
    """
    path, method = case.operation.path, case.method.upper()
    operation = operation_kinds().get((method, path))
    if operation is None:
        return 0
    kind = operation.kind
    if kind == "network":
        return _propagation_bytes(case.body, settings)
    if kind == "manifest":
        return _manifest_bytes(case.body)
    if kind == "checkpoint":
        return _checkpoint_bytes(case, settings)
    if method in ("GET", "HEAD"):
        named = [("scheme", operation.scheme)] if operation.scheme else []
        try:
            document: Any = query_document(named + _query_items(dict(case.query or {})))
        except ProblemError:
            return 0
    else:
        document = case.body
    bins = None
    if kind == "stats" and isinstance(document, dict):
        document = dict(document)
        bins = document.pop("bins", None)
    try:
        parsed = validate(document)
    except ProblemError:
        return 0
    try:
        prepared = plan_for(resolve_document(parsed, settings), settings)
    except ProblemError:
        return None
    if isinstance(bins, int) and bins > settings.max_histogram_bins:
        return None
    if kind == "stats" and sum(stats_flops(s) for s in prepared.specs) > settings.max_stats_flops:
        return None
    return 0 if method == "HEAD" or kind == "plan" else prepared.size


def _propagation_bytes(body: Any, settings: Settings) -> int | None:
    """None when /propagation refuses the body beyond the schema (how layers fit together, the schemes' own rules, the limits).

    Else the float32 bytes its measurement passes through (cells × 4), so that the
    outside run's budget bounds it as it bounds a generated tensor.
    """
    try:
        networks, _, measure = networks_of(body, settings, "application/json")
    except ProblemError:
        return None
    return 4 * sum(n.cells() for n in networks) if measure else 0


def _manifest_bytes(body: Any) -> int | None:
    """0 for a config the architectures take (nothing is generated) or a body the route refuses as such; None for one they refuse."""
    if not isinstance(body, dict) or "config" not in body:
        return 0
    try:
        manifest_from_config(body["config"])
    except TensorinitError:
        return None
    return 0


def _checkpoint_bytes(case: schemathesis.Case[Any], settings: Settings) -> int | None:
    """None when the service refuses a checkpoint request beyond the schema (a config the
    architectures refuse, a file over the limit); 0 for a name or file it does not know (a
    404, acceptable for a positive example) or for a plan; else the size of the file it serves."""
    catalogue = models.catalogue_of(settings)
    method, params = case.method.upper(), dict(case.path_parameters or {})
    try:
        if method == "POST":
            try:
                parsed = models.CheckpointRequest.model_validate(case.body)
            except ValueError:
                return 0
            config, options = models.body_config(catalogue, parsed)
        else:
            config = models.model_config(catalogue, str(params["model"]))
            options = models.query_options(_query_items(dict(case.query or {})))
        found = models.planned(config, settings, **options)
    except ProblemError as err:
        return 0 if err.status == 404 else None
    item = found.files.get(str(params.get("file")))
    if item is None:
        return 0
    try:
        models.check_file(item, settings)
    except ProblemError:
        return None
    return 0 if method == "HEAD" else item.size


def keep_case(case: schemathesis.Case[Any], settings: Settings, *, max_bytes: int | None = None) -> bool:
    """A ``filter_case`` verdict: every negative case, and a positive one unless :func:`refused_beyond_schema`.

    With ``max_bytes``, no case (positive, or negative but accepted all the same) whose
    answer would be larger is sent: a budget of time for a server with the default limits
    (8 GiB per answer), not a rule of the contract. Every smaller request, and every
    refusal, is still checked.
    """
    size = _accepted_bytes(case, settings)
    if max_bytes is not None and size is not None and size > max_bytes:
        return False
    meta = case.meta
    return meta is None or not meta.generation.mode.is_positive or size is not None


def within_budget(case: schemathesis.Case[Any], settings: Settings, max_bytes: int) -> bool:
    """A ``filter_case`` verdict for the run from outside: every case but those whose answer would exceed ``max_bytes``.

    A budget of time for a server with the default limits (8 GiB per answer), not a rule
    of the contract: every smaller request, and every refusal, is sent.
    """
    size = _accepted_bytes(case, settings)
    return size is None or size <= max_bytes


@dataclass(frozen=True)
class Unstateable:
    """A rule of the service that its OpenAPI document cannot state, as docs/api.md lists it.

    ``pattern`` is matched against a refusal's first error as ``path: allowed`` (the path
    joined with ``/``), ``statuses`` against its status; ``forms`` limits it to the GET
    query forms (``"query"``), or to the flat ones (``"flat"``: /init and /stats with
    ``scheme`` in the query), where a rule that ties parameters together cannot be
    stated because each query parameter has a schema of its own.
    """

    name: str
    pattern: str = ""
    statuses: frozenset[int] = frozenset({422})
    forms: Literal["any", "query", "flat"] = "any"

    def matches(self, method: str, path: str, status: int, problem: Any) -> bool:
        if status not in self.statuses:
            return False
        query = method in ("GET", "HEAD")
        if (self.forms == "query" and not query) or (self.forms == "flat" and not (query and path in ("/init", "/stats"))):
            return False
        return re.search(self.pattern, refusal_text(problem)) is not None


def refusal_text(problem: Any) -> str:
    """A problem's first error as ``path: allowed`` (its detail when it names no field)."""
    if not isinstance(problem, dict):
        return str(problem)[:200]
    errors: Sequence[Any] = problem.get("errors") or []
    if errors and isinstance(errors[0], dict):
        return "/".join(str(p) for p in errors[0].get("path", [])) + ": " + str(errors[0].get("allowed"))
    return str(problem.get("detail"))


UNSTATEABLE = (
    Unstateable("size limits", statuses=frozenset({413})),
    Unstateable("bound order", r"^(low|lower): a number below (high|upper)"),
    Unstateable(
        "numbers the dtype can hold",
        r"^\w+: (parameters whose (resolved spread|values stay within)|truncation bounds that leave probability mass)",
    ),
    Unstateable("the rank fans need under a convention", r"^shape: at least \d+ dimensions in \w+ convention"),
    Unstateable(
        "axes within the rank, distinct and apart",
        r"^(in_axes|out_axes|batch_axes|column_axis): (integers in|an axis in|distinct axes|axes that appear in only one)",
    ),
    Unstateable("channels", r"^(groups: a divisor of the output channels|shape: in channels ≤ out channels)"),
    Unstateable("a slice within the shape", r"^slice: .*at most one item per axis"),
    Unstateable("names distinct after NFC", r"^tensors/[^:]*: distinct names"),
    Unstateable(
        "what a recipe covers",
        r"^(tensors(/[^:]*)?: (a kind recipe \w+ covers|no role without a kind|a role of|at least one tensor not skipped)"
        r"|(.*/)?recipe_params/\w+: .*(or decoder_layers|base_shape attribute))",
    ),
    Unstateable(
        "two query parameters together",
        r"^(gain: either gain or|(in|out|batch)_axes: in_axes and out_axes must be given together)",
        forms="query",
    ),
    Unstateable("a scheme's rank in the flat query form", r"^shape: a shape of rank", forms="flat"),
    Unstateable("a parameter only with another's value", r"^negative_slope: only with nonlinearity"),
    Unstateable("a config the architectures accept", r"^(config|model)(/[^:]*)?: "),
    Unstateable(
        "a checkpoint's shard size and file names",
        r"^max_shard_size: a positive integer of bytes|not a file of this checkpoint",
        statuses=frozenset({404, 422}),
    ),
)
"""Every refusal of a schema-valid request falls under one of these (test_contract_outside.py); docs/api.md lists them by name."""


def unstateable_rule(method: str, path: str, status: int, problem: Any) -> str | None:
    """The name of the :data:`UNSTATEABLE` rule a refusal of a schema-valid request is for; None: the document could state it."""
    return next((rule.name for rule in UNSTATEABLE if rule.matches(method, path, status, problem)), None)
