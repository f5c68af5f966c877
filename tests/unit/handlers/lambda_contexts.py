"""Lambda contexts as the two kinds of runtime pass them to a handler."""

from __future__ import annotations


class PlainContext:
    """What the managed runtime or `sam local invoke` passes: no ``response_streaming``."""

    aws_request_id = "c0ffee00-0000-4000-8000-000000000001"
    function_name = "agentstream"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:agentstream"
    memory_limit_in_mb = 512
    log_group_name = "/aws/lambda/agentstream"
    log_stream_name = "2026/11/25/[$LATEST]abc"
    identity = None
    client_context = None

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


class StreamingContext(PlainContext):
    """What the streaming-runtime layer passes."""

    response_streaming = True
