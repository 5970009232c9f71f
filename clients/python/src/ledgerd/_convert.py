"""Conversions between Python values and protobuf well-known types."""

from __future__ import annotations

import datetime
from typing import Optional, Union

from google.protobuf import duration_pb2, timestamp_pb2

#: Seconds (int or float) or a timedelta.
DurationLike = Union[int, float, datetime.timedelta]

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def seconds(value: DurationLike, name: str) -> float:
    """Returns ``value`` (seconds or a timedelta) as float seconds."""
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be seconds (int or float) or a datetime.timedelta, got {type(value).__name__}")
    return float(value)


def to_duration(value: DurationLike, name: str) -> duration_pb2.Duration:
    """Returns a Duration for ``value`` (seconds or a timedelta), to the nanosecond."""
    if isinstance(value, datetime.timedelta):
        nanos_total = (
            (value.days * 86400 + value.seconds) * 1_000_000_000 + value.microseconds * 1000
        )
    else:
        nanos_total = round(seconds(value, name) * 1e9)
    # Duration wants seconds and nanos of the same sign.
    sign = -1 if nanos_total < 0 else 1
    secs, nanos = divmod(abs(nanos_total), 1_000_000_000)
    return duration_pb2.Duration(seconds=sign * secs, nanos=sign * nanos)


def from_duration(value: duration_pb2.Duration) -> float:
    """Returns a Duration as float seconds."""
    return value.seconds + value.nanos / 1e9


def from_timestamp(message: object, field: str) -> Optional[datetime.datetime]:
    """Returns the Timestamp ``field`` of ``message`` as an aware UTC datetime, or None if unset."""
    if not message.HasField(field):  # type: ignore[attr-defined]
        return None
    ts: timestamp_pb2.Timestamp = getattr(message, field)
    return _EPOCH + datetime.timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)
