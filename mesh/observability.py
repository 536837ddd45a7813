"""Logs (structlog) and traces (OpenTelemetry) for every stekker process.

Logs are JSON when stderr is not a terminal, readable lines when it is. Traces have no
exporter by default; with OTEL_EXPORTER_OTLP_ENDPOINT set they go out over OTLP/HTTP.
Trace context travels in each message's `traceparent` header, so one submission can be
followed from the CLI through the scheduler to the agent that binds it.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog
from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

_configured = False


def setup(service: str, *, level: str | None = None) -> None:
    """Configure logging and tracing once per process."""
    global _configured
    if _configured:
        return
    _configured = True
    level_name = (level or os.environ.get("STEKKER_LOG_LEVEL", "info")).upper()
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=True)
        if sys.stderr.isatty()
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level_name, logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    provider = TracerProvider(resource=Resource.create({"service.name": f"stekker-{service}"}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return,unused-ignore]


def tracer() -> trace.Tracer:
    return trace.get_tracer("stekker")


def inject(headers: MutableMapping[str, str]) -> None:
    """Put the current trace context into outgoing message headers."""
    propagate.inject(headers)


def extract(headers: Mapping[str, str]) -> context.Context:
    return propagate.extract(dict(headers))
