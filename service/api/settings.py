"""Settings from the environment (prefix ``TENSORINIT_``), read once by the app factory.

``HOST`` and ``PORT`` are not here: they belong to the process that runs uvicorn
(``make run``, the Dockerfile), not to the application.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.core import Limits
from service.core.propagation import PropagationLimits

MiB = 1 << 20
GiB = 1 << 30


class Settings(BaseSettings):
    """Limits and knobs; every field is the env var ``TENSORINIT_<FIELD NAME IN CAPITALS>``."""

    model_config = SettingsConfigDict(env_prefix="TENSORINIT_", extra="ignore", frozen=True)

    # -- limits (issue 3): checked before the first byte of any response ----------
    max_elements: int = Field(1 << 31, ge=1, le=(1 << 63) - 1, description="elements per tensor")
    max_response_bytes: int = Field(8 * GiB, ge=1, le=(1 << 63) - 1, description="bytes of one safetensors response, header included")
    max_batch_tensors: int = Field(1024, ge=1, description="tensors in one batch request")
    max_orthogonal_elements: int = Field(
        1 << 24, ge=1, description="rows × cols of an orthogonal, sparse or delta-orthogonal matrix (computed whole)"
    )
    max_histogram_bins: int = Field(1024, ge=1, description="histogram bins of /stats")
    max_body_bytes: int = Field(1 * MiB, ge=1, description="bytes of a request body (checked while reading it)")
    max_dims: int = Field(8, ge=0, description="dimensions of a shape")
    max_name_length: int = Field(256, ge=1, description="characters of a tensor name")
    # -- /propagation and the pictures (issue 11) --
    max_propagation_depth: int = Field(1000, ge=1, description="layers of a /propagation network")
    max_propagation_width_batch: int = Field(1 << 20, ge=1, description="widest layer × positions × batch of a /propagation pass")
    max_propagation_cells: int = Field(
        1 << 26, ge=1, description="numbers a /propagation measurement keeps (layers × width × batch, all networks)"
    )
    max_propagation_compare: int = Field(8, ge=0, description="schemes in /propagation's compare besides init")
    # -- the cost of work that grows with the input (issue 17): checked before any work --
    max_propagation_bytes: int = Field(
        1 * GiB, ge=1, description="bytes a /propagation measurement may hold (the engine's bound, all networks)"
    )
    max_propagation_flops: int = Field(
        150 * 10**9,
        ge=1,
        description="operations of a /propagation measurement: matmuls, weights drawn, orthogonal QRs (all networks)",
    )
    max_matrix_flops: int = Field(
        300 * 10**9,
        ge=1,
        description="operations of the matrices one request computes whole before its first byte (orthogonal QRs; "
        "the default allows one 4096 × 4096)",
    )
    max_stats_flops: int = Field(
        200 * 10**9, ge=1, description="operations of one /stats request: tensors drawn and summarized, orthogonal QRs"
    )
    max_plot_points: int = Field(20_000, ge=1, description="points of one picture (/propagation series × layers, /stats bins × tensors)")

    # -- models (issue 19) --
    models_dir: str | None = Field(
        None,
        description="a directory of NAME.json model configs, joining the built-in catalogue (GET /models, tensorinit/NAME on the Hub routes)",
    )

    # -- streaming --------------------------------------------------------------
    prefetch_blocks: int = Field(4, ge=1, description="blocks generated ahead of the socket per response")

    # -- declared for issue 5 (security, admission, CORS); wired in by its modules --
    api_keys: str = Field("", description="comma-separated API keys; empty: no authentication")
    api_keys_file: str | None = Field(None, description="a file with one sha256 hex digest of an API key per line")
    max_concurrent_generations: int = Field(4, ge=1, description="responses generating at once")
    max_bytes_in_flight: int = Field(256 * MiB, ge=1, description="bytes admitted but not yet sent, over all responses")
    admission_timeout_seconds: float = Field(2.0, ge=0, description="how long a request waits for admission before 503")
    cors_origins: str = Field("", description="comma-separated allowed CORS origins; empty: no CORS")

    # -- connections (issue 17): read by service.api.protocol and service.api.serve --
    max_header_bytes: int = Field(64 * 1024, ge=1024, description="bytes of a request head (request line and headers); longer: 431")
    header_timeout_seconds: float = Field(
        10.0, gt=0, description="a request head must be complete this long after its first byte (and a new connection send one)"
    )
    body_timeout_seconds: float = Field(
        30.0, gt=0, description="a request body must be complete this long after its head; else 408 and the connection closed"
    )
    keep_alive_seconds: int = Field(
        5, ge=1, description="an idle keep-alive connection is closed after this long (uvicorn's --timeout-keep-alive)"
    )
    write_stall_seconds: float = Field(
        30.0, gt=0, description="a response whose client reads nothing for this long is aborted, releasing what it holds"
    )
    max_client_share: float = Field(
        0.5, gt=0, le=1, description="the share of the generation slots and of the bytes in flight that one client address may hold"
    )
    max_rules: int = Field(1024, ge=1, description="rules of one recipe request")

    # -- observability ------------------------------------------------------------
    access_log: str = Field("stderr", min_length=1, description="JSON access log: stderr, stdout, off, or a file path (appended to)")
    access_log_flush_seconds: float = Field(
        1.0, ge=0, description="access-log lines are written in batches at least this often (0: every line at once)"
    )
    access_log_probes: bool = Field(
        False, description="also log /healthz, /readyz and /metrics requests (left out by default: probes every few seconds bury the rest)"
    )
    otel: bool = Field(
        False,
        description="FastAPI's native OpenTelemetry (spans, metrics and logs to the globally configured providers); "
        "off, it costs nothing per request. Prometheus /metrics and the JSON access log are always on",
    )

    @property
    def engine_limits(self) -> Limits:
        """The subset of limits that the engine checks during resolution."""
        return Limits(
            max_elements=self.max_elements,
            max_dims=self.max_dims,
            max_orthogonal_elements=self.max_orthogonal_elements,
            max_name_length=self.max_name_length,
            max_rules=self.max_rules,
        )

    @property
    def propagation_limits(self) -> PropagationLimits:
        """The limits /propagation's engine checks while it builds a network."""
        return PropagationLimits(
            max_depth=self.max_propagation_depth,
            max_width_batch=self.max_propagation_width_batch,
            max_cells=self.max_propagation_cells,
            max_compare=self.max_propagation_compare,
            max_bytes=self.max_propagation_bytes,
            max_flops=self.max_propagation_flops,
        )

    def public_limits(self) -> dict[str, int]:
        """The limits as reported by /version and /schemes."""
        return {
            "max_elements": self.max_elements,
            "max_response_bytes": self.max_response_bytes,
            "max_batch_tensors": self.max_batch_tensors,
            "max_orthogonal_elements": self.max_orthogonal_elements,
            "max_histogram_bins": self.max_histogram_bins,
            "max_body_bytes": self.max_body_bytes,
            "max_dims": self.max_dims,
            "max_name_length": self.max_name_length,
            "max_propagation_depth": self.max_propagation_depth,
            "max_propagation_width_batch": self.max_propagation_width_batch,
            "max_propagation_cells": self.max_propagation_cells,
            "max_propagation_compare": self.max_propagation_compare,
            "max_propagation_bytes": self.max_propagation_bytes,
            "max_propagation_flops": self.max_propagation_flops,
            "max_matrix_flops": self.max_matrix_flops,
            "max_stats_flops": self.max_stats_flops,
            "max_plot_points": self.max_plot_points,
            "max_rules": self.max_rules,
        }
