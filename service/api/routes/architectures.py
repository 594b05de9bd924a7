"""POST /models/manifest: a config.json's tensors as save_pretrained writes them, and where transformers holds each in memory.

What a client needs to fill a model it has already built (``init_module(model,
recipe="transformers")``): the on-disk names, shapes, kinds and roles of recipe
``transformers``'s manifest, and for a tensor that lives inside another in memory
(Mixtral's experts are slices of the fused ``gate_up_proj``), that parameter and the
index. The engine (:mod:`service.core.architectures`) does the work; nothing is generated.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from service.core import TensorinitError
from service.core.architectures import TensorEntry, config_dtype, resolve_architecture

from ..docs import problem
from ..offload import off_loop
from ..problems import ProblemError, from_engine
from ..resolution import read_json
from ..settings import Settings

router = APIRouter(tags=["models"])

RESPONSES: dict[int | str, dict[str, Any]] = {
    400: problem("malformed JSON"),
    413: problem("the body is larger than max_body_bytes"),
    415: problem("the body is not JSON"),
    422: problem("config missing or not an object, an unknown model_type or class (the supported ones listed), a field of the wrong type"),
}


def _memory(entry: TensorEntry) -> dict[str, Any] | None:
    if entry.memory is None:
        return None
    parameter, index = entry.memory
    return {"parameter": parameter, "index": [list(i) if isinstance(i, tuple) else i for i in index]}


@router.post(
    "/models/manifest",
    operation_id="models_manifest",
    summary="A config.json's tensors as save_pretrained writes them, each with where transformers holds it in memory",
    responses=RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": '{"config": a Hugging Face config.json}',
            "content": {
                "application/json": {"schema": {"type": "object", "required": ["config"], "properties": {"config": {"type": "object"}}}}
            },
        }
    },
)
async def models_manifest(request: Request) -> dict[str, Any]:
    settings: Settings = request.app.state.settings
    document = await read_json(request, settings.max_body_bytes)
    if not isinstance(document, dict) or "config" not in document:
        raise ProblemError(
            "validation-error",
            "config: required but not given",
            errors=[{"path": ["config"], "message": "required", "allowed": "a Hugging Face config.json (an object)"}],
        )
    config = document["config"]

    def build() -> tuple[Any, str, list[TensorEntry], str]:
        found, cls, cfg = resolve_architecture(config)
        return found, cls, found.build(cfg, cls), config_dtype(config)

    try:  # grows with the config's layers and experts: off the event loop, as /plan is
        found, cls, entries, dtype = await off_loop(build)
    except TensorinitError as err:  # its field under the path of the object it is about (config/model_type)
        raise from_engine(err, getattr(err, "where", ())) from None
    return {
        "model_type": found.model_type,
        "class": cls,
        "dtype": dtype,
        "tensors": [{"name": e.name, "shape": list(e.shape), "kind": e.kind, "role": e.role, "memory": _memory(e)} for e in entries],
    }
