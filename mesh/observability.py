"""Logs (structlog) and traces (OpenTelemetry) for every stekker process.

Logs are JSON when stderr is not a terminal, readable lines when it is. Traces are
recorded only where they can go: with OTEL_EXPORTER_OTLP_ENDPOINT set, a process records
its spans and sends them over OTLP/HTTP. Without it, no span is recorded (a cost on
every message, for nobody), but a trace context that arrives is passed on. Trace
context travels in each message's `traceparent` header, so one submission can be
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

_configured = False


class _StderrLogger:
    """Writes each line to whatever `sys.stderr` is *now* (tests swap it), never stdout:
    stdout belongs to a command's output (tables, JSON)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def configure_logging(level: str | None = None) -> None:
    """Logs to stderr: readable lines on a terminal, JSON Lines otherwise."""
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
        logger_factory=lambda *args: _StderrLogger(),
        # Not cached: a logger made at import must follow a later configure_logging().
        cache_logger_on_first_use=False,
    )


def setup(service: str, *, level: str | None = None) -> None:
    """Configure logging, and tracing once per process (its service name sticks)."""
    global _configured
    configure_logging(level)
    if _configured:
        return
    _configured = True
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return  # OpenTelemetry's no-op tracer: contexts pass through, nothing is recorded
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": f"stekker-{service}"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


# Until a process says otherwise, log to stderr, never to stdout.
configure_logging()


def logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return,unused-ignore]


# Made once: `get_tracer` checks its arguments with regular expressions, and
# `trace.get_tracer_provider()` looks in os.environ on every call (a twentieth of a
# publisher's CPU). Without a provider yet, this is OpenTelemetry's proxy, which follows
# the provider set later (by `setup`, or by a test).
_tracer = trace.get_tracer("stekker")


def tracer() -> trace.Tracer:
    """The tracer of the provider in force."""
    return _tracer


def inject(headers: MutableMapping[str, str]) -> None:
    """Put the current trace context into outgoing message headers."""
    propagate.inject(headers)


def extract(headers: Mapping[str, str]) -> context.Context:
    return propagate.extract(dict(headers))
