"""Prometheus metrics of one server (each app has its own registry).

Labels take values from a fixed set only (route templates, known model names,
status codes), so hostile paths or model names cannot grow the series without
bound.
"""

from __future__ import annotations

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge,
                               Histogram, generate_latest)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, max_batch_size=64):
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("handgrad_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=r)
        self.errors = Counter("handgrad_request_errors",
                              "HTTP requests answered with a 4xx or 5xx status",
                              ["route", "status"], registry=r)
        self.latency = Histogram("handgrad_request_duration_seconds",
                                 "Time from a request's arrival to its response",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("handgrad_requests_in_flight", "Requests being handled now",
                               registry=r)
        self.rejected = Counter("handgrad_requests_rejected",
                                "Requests refused by a safety limit",
                                ["reason"], registry=r)
        buckets, b = [], 1
        while b < max_batch_size:
            buckets.append(b)
            b *= 2
        buckets.append(max_batch_size)
        self.batch_size = Histogram("handgrad_batch_size",
                                    "Rows per forward pass of the dynamic batcher",
                                    ["model"], buckets=buckets, registry=r)
        self.batch_seconds = Histogram("handgrad_batch_duration_seconds",
                                       "Time of one batched forward pass",
                                       ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.inferences = Counter("handgrad_inferences", "Examples classified",
                                  ["model"], registry=r)
        self.queue_rows = Gauge("handgrad_queue_rows", "Rows waiting for a batch",
                                ["model"], registry=r)
        self.visitor_copies = Gauge("handgrad_visitor_copies",
                                    "Per-visitor model copies held for the page", registry=r)
        self.visitor_bytes = Gauge("handgrad_visitor_copy_bytes",
                                   "Memory of the per-visitor model copies", registry=r)
        self.learn_steps = Counter("handgrad_page_learn_steps",
                                   "SGD steps taken on visitor copies", ["model"], registry=r)

    def observe_request(self, route, method, status, seconds):
        status = str(status)
        self.requests.labels(route, method, status).inc()
        if status[0] in "45":
            self.errors.labels(route, status).inc()
        self.latency.labels(route).observe(seconds)

    def observe_batch(self, model, rows, seconds):
        self.batch_size.labels(model).observe(rows)
        self.batch_seconds.labels(model).observe(seconds)
        self.inferences.labels(model).inc(rows)

    def render(self):
        return generate_latest(self.registry)
