"""The Anthropic Messages dialect (Claude Code's API): ``request`` checks a Messages request and maps it onto an
OpenAI chat request (the pivot); ``wire`` builds what goes back (whole messages, stream events, errors, model
lists). Pure, like every dialect: dict in, dict out; ids and times come in as arguments."""
from __future__ import annotations

from .request import (
    BILLING_PREFIX,
    check_count_tokens_request,
    check_messages_request,
    estimate_tokens,
    flat_text,
    think_of,
    to_openai,
    tool_id,
    without_billing,
)
from .wire import (
    MESSAGE_STOP,
    PING,
    STOP_REASONS,
    block_delta,
    block_start,
    block_stop,
    error_event,
    event,
    matched_stop,
    message_delta,
    message_from_openai,
    message_start,
    model_entry,
    model_list,
    new_message_id,
    stop_reason_of,
    tool_use_id,
    usage_of,
)

__all__ = [
    "BILLING_PREFIX", "MESSAGE_STOP", "PING", "STOP_REASONS", "block_delta", "block_start", "block_stop",
    "check_count_tokens_request", "check_messages_request", "error_event", "estimate_tokens", "event",
    "flat_text", "matched_stop", "message_delta", "message_from_openai", "message_start", "model_entry",
    "model_list", "new_message_id", "stop_reason_of", "think_of", "to_openai", "tool_id", "tool_use_id",
    "usage_of", "without_billing",
]
