"""Prometheus metric objects shared by every part of the node; `/metrics` serves the default registry.

Each part increments its own metrics where the thing happens (ingest counts instances, the API times
requests); values that live elsewhere (jobs by state, open associations) are read when scraped and
analysis/delivery outcomes are counted from the event log, wherever the worker runs (api/ops.py).
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

INSTANCES_RECEIVED = Counter("neuropetrix_instances_received",
                             "DICOM instances stored and indexed (duplicates not counted)")
BYTES_RECEIVED = Counter("neuropetrix_received_bytes", "Bytes of DICOM instances stored")
DICOM_ASSOCIATIONS = Gauge("neuropetrix_dicom_associations_active", "DICOM associations open now")
ASSOCIATIONS = Counter("neuropetrix_dicom_associations", "DICOM association requests, by outcome", ["outcome"])
INSTANCES_REFUSED = Counter("neuropetrix_instances_refused", "C-STORE requests answered with a failure status",
                            ["status"])
ANALYSES = Counter("neuropetrix_analyses", "Analyses finished, by result", ["result"])
ANALYSIS_SECONDS = Histogram("neuropetrix_analysis_duration_seconds", "Time one analysis took",
                             buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800))
JOBS = Gauge("neuropetrix_jobs", "Jobs in the queue, by state", ["state"])
DESTINATION_FAILURES = Gauge("neuropetrix_destination_failures",
                             "Consecutive failed attempts of a destination (0 once it answers again)", ["destination"])
STORAGE_FREE = Gauge("neuropetrix_storage_free_bytes", "Free bytes on the file system of the storage folder")
STORAGE_CAPACITY = Gauge("neuropetrix_storage_capacity_bytes", "Size of the file system of the storage folder")
STORAGE_BELOW_WATERMARK = Gauge("neuropetrix_storage_below_watermark",
                                "1 while new associations are refused for lack of disk space (node.min_free_mb)")
DELIVERIES_FAILED = Counter("neuropetrix_deliveries_failed", "Failed delivery attempts, by destination type", ["kind"])
PUSH_MESSAGES = Counter("neuropetrix_push_messages", "Push notifications by outcome", ["outcome"])
API_SECONDS = Histogram("neuropetrix_api_request_duration_seconds", "API request latency",
                        ["method", "route", "status"],
                        buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
WS_CLIENTS = Gauge("neuropetrix_websocket_clients", "WebSocket clients connected")
# the event stream's stages (api/event_feed.py): an event's creation to the feed having read it (the
# writer's commit, the wake-up or poll, the read); of that, from a commit in this process to the read
# (the wake-up and the read); and one batch's fan-out to every live WebSocket
EVENT_FEED_LAG = Histogram("neuropetrix_event_feed_lag_seconds",
                           "From an event's creation to the API's feed reading it",
                           buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
EVENT_READ_SECONDS = Histogram("neuropetrix_event_read_seconds",
                               "From an event's commit in this process to the API's feed reading it",
                               buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1))
EVENT_FANOUT_SECONDS = Histogram("neuropetrix_event_fanout_seconds",
                                 "Writing one batch of events to every live WebSocket",
                                 buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1))
