"""Checking a rendered message against Slack's limits: ``limit_problems`` lists what Slack would
reject, so the tests can prove no card, reply or answer ever breaks one."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from slack_sdk.models.blocks import Block

from bot.cards.blocks import _dict, _list
from bot.cards.limits import (
    MAX_ACTIONS_ELEMENTS,
    MAX_BLOCKS,
    MAX_BUTTON_TEXT,
    MAX_BUTTON_URL,
    MAX_BUTTON_VALUE,
    MAX_CONFIRM_BUTTON,
    MAX_CONFIRM_TEXT,
    MAX_CONFIRM_TITLE,
    MAX_CONTEXT_ELEMENTS,
    MAX_CONTEXT_TEXT,
    MAX_FIELD_TEXT,
    MAX_FIELDS,
    MAX_HEADER,
    MAX_ID,
    MAX_MESSAGE_BLOCK_TEXT,
    MAX_SECTION_TEXT,
    MAX_TEXT,
)
from bot.model import Message


def _text_objects(value: Any) -> Iterable[dict[str, Any]]:
    """Every text object (plain_text or mrkdwn) anywhere inside a block."""
    if isinstance(value, dict):
        if value.get("type") in ("plain_text", "mrkdwn") and "text" in value:
            yield value
        for child in value.values():
            yield from _text_objects(child)
    elif isinstance(value, list):
        for child in value:
            yield from _text_objects(child)


def _length(text_object: Any) -> int:
    text = _dict(text_object).get("text")
    return len(text) if isinstance(text, str) else 0


def _too_long(problems: list[str], where: str, text_object: Any, limit: int) -> None:
    if _length(text_object) > limit:
        problems.append(f"{where}: {_length(text_object)} characters, more than Slack's {limit}")


def _check_plain(problems: list[str], where: str, text_object: Any, limit: int) -> None:
    if _dict(text_object).get("type") != "plain_text":
        problems.append(f"{where}: must be a plain_text object")
    _too_long(problems, where, text_object, limit)


def _check_button(problems: list[str], where: str, button: dict[str, Any]) -> None:
    _check_plain(problems, f"{where} text", button.get("text"), MAX_BUTTON_TEXT)
    for key, limit in (("value", MAX_BUTTON_VALUE), ("action_id", MAX_ID), ("url", MAX_BUTTON_URL)):
        value = button.get(key)
        if isinstance(value, str) and len(value) > limit:
            problems.append(f"{where} {key}: {len(value)} characters, more than Slack's {limit}")
    if "confirm" in button:
        confirm = _dict(button.get("confirm"))
        for key, limit in (
            ("title", MAX_CONFIRM_TITLE),
            ("text", MAX_CONFIRM_TEXT),
            ("confirm", MAX_CONFIRM_BUTTON),
            ("deny", MAX_CONFIRM_BUTTON),
        ):
            _check_plain(problems, f"{where} confirm {key}", confirm.get(key), limit)


def _check_block(problems: list[str], where: str, block: dict[str, Any]) -> None:
    kind = block.get("type")
    if kind == "header":
        _check_plain(problems, f"{where} text", block.get("text"), MAX_HEADER)
    elif kind == "section":
        if "text" in block:
            _too_long(problems, f"{where} text", block.get("text"), MAX_SECTION_TEXT)
        fields = _list(block.get("fields"))
        if len(fields) > MAX_FIELDS:
            problems.append(f"{where}: {len(fields)} fields, more than Slack's {MAX_FIELDS}")
        for index, field in enumerate(fields):
            _too_long(problems, f"{where} field {index}", field, MAX_FIELD_TEXT)
    elif kind == "context":
        elements = _list(block.get("elements"))
        if len(elements) > MAX_CONTEXT_ELEMENTS:
            problems.append(
                f"{where}: {len(elements)} elements, more than Slack's {MAX_CONTEXT_ELEMENTS}"
            )
        for index, element in enumerate(elements):
            _too_long(problems, f"{where} element {index}", element, MAX_CONTEXT_TEXT)
    elif kind == "actions":
        elements = _list(block.get("elements"))
        if len(elements) > MAX_ACTIONS_ELEMENTS:
            problems.append(
                f"{where}: {len(elements)} elements, more than Slack's {MAX_ACTIONS_ELEMENTS}"
            )
        action_ids = [_dict(element).get("action_id") for element in elements]
        if len(set(action_ids)) != len(action_ids):
            problems.append(f"{where}: action_ids are not unique")
        for index, element in enumerate(elements):
            if _dict(element).get("type") == "button":
                _check_button(problems, f"{where} button {index}", element)


def limit_problems(message: Message) -> list[str]:
    """List, in words, every way ``message`` breaks a Slack limit; an empty list means it is fine.

    Checks Slack's documented limits, the ones ``slack_sdk`` does not enforce (50 blocks, field
    length, the whole-message text cap), empty text objects, and runs each block through
    ``slack_sdk``'s own validation.
    """
    problems: list[str] = []
    text = message.text
    if not isinstance(text, str) or not text.strip():
        problems.append("text: the notification fallback is empty")
    elif len(text) > MAX_TEXT:
        problems.append(f"text: {len(text)} characters, more than {MAX_TEXT}")
    blocks = message.blocks
    if len(blocks) > MAX_BLOCKS:
        problems.append(f"message: {len(blocks)} blocks, more than Slack's {MAX_BLOCKS}")
    block_ids: set[str] = set()
    total = 0
    for index, block in enumerate(blocks):
        if not isinstance(block, dict):
            problems.append(f"block {index}: not an object")
            continue
        where = f"block {index} ({block.get('type')})"
        block_id = block.get("block_id")
        if block_id is not None:
            if not isinstance(block_id, str) or not block_id or len(block_id) > MAX_ID:
                problems.append(f"{where}: block_id must be 1–{MAX_ID} characters")
            elif block_id in block_ids:
                problems.append(f"{where}: block_id {block_id!r} is used twice")
            else:
                block_ids.add(block_id)
        for text_object in _text_objects(block):
            value = text_object.get("text")
            if not isinstance(value, str) or not value.strip():
                problems.append(f"{where}: a text object is empty")
            total += _length(text_object)
        _check_block(problems, where, block)
        try:
            parsed = Block.parse(block)
            if parsed is None:
                problems.append(f"{where}: slack_sdk does not know this block type")
            else:
                parsed.to_dict()
        except Exception as error:  # any validation failure is a problem to report, not a crash
            problems.append(f"{where}: {error}")
    if total >= MAX_MESSAGE_BLOCK_TEXT:
        problems.append(
            f"message: {total} characters of block text;"
            f" Slack rejects around {MAX_MESSAGE_BLOCK_TEXT}"
        )
    return problems
