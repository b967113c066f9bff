"""Modals (`views.open`) as HTML for the Slack sandbox page: title, blocks, the inputs with what
the person typed and the errors the app reported, submit and close buttons."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.demo.render import Names, _esc, _text, block_html, text_object_html

MAX_INPUT_LENGTH = 3_000  # Slack's cap on a plain_text_input's max_length
# Element types whose state is a "value" a person types; the sandbox shows plain_text_input.
TEXT_INPUTS = ("plain_text_input",)


def input_ids(block: Mapping[str, Any], index: int) -> tuple[str, str]:
    """The (block_id, action_id) of an input block, made up as Slack does when absent (the
    same as ``bot.sandbox.slack.view_submission_body``)."""
    element = block.get("element")
    element = element if isinstance(element, Mapping) else {}
    return (
        _text(block.get("block_id") or f"input{index}"),
        _text(element.get("action_id") or f"element{index}"),
    )


def input_limits(element: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(min_length, max_length) of a text input, when they are numbers Slack accepts."""

    def number(name: str) -> int | None:
        value = element.get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            return None
        return value if 0 <= value <= MAX_INPUT_LENGTH else None

    return number("min_length"), number("max_length")


def modal_html(
    view: Any,
    names: Names | None = None,
    *,
    values: Mapping[str, Mapping[str, str]] | None = None,
    errors: Mapping[str, str] | None = None,
    banner: str = "",
    busy: bool = False,
) -> str:
    """A modal as Slack draws it: title bar, blocks, then the close and submit buttons.

    `values` is what the person typed (block_id → action_id → text; an input not listed shows
    its ``initial_value``), `errors` what the app answered for an input (block_id → message,
    shown under it), `banner` a failure shown above the blocks. The form carries the view's id
    (``data-view-id``); inputs carry ``data-block-id``/``data-action-id``.
    """
    names = names or Names()
    view = view if isinstance(view, Mapping) else {}
    values = values or {}
    errors = errors or {}
    title = text_object_html(view.get("title"), names)
    close = text_object_html(view.get("close"), names) or "Cancel"
    submit = view.get("submit")
    blocks = view.get("blocks")
    parts = []
    for index, block in enumerate(blocks if isinstance(blocks, list) else []):
        if isinstance(block, Mapping) and block.get("type") == "input":
            parts.append(_input(block, names, index, values, errors))
        else:
            parts.append(block_html(block, names, index=index))
    note = f'<div class="sk-view-banner" role="alert">{_esc(banner)}</div>' if banner else ""
    submit_button = (
        f'<button type="submit" class="sk-button sk-primary sk-view-submit"'
        f"{' disabled' if busy else ''}>{text_object_html(submit, names)}</button>"
        if isinstance(submit, Mapping)
        else ""
    )
    return (
        f'<form class="sk-view" data-view-id="{_esc(view.get("id"))}" novalidate>'
        '<header class="sk-view-header">'
        '<div class="sk-avatar sk-avatar-bot sk-view-icon">C</div>'
        f'<h2 class="sk-view-title" id="sk-view-title">{title}</h2>'
        '<button type="button" class="sk-view-x sk-view-close" aria-label="Close">×</button>'
        "</header>"
        f'<div class="sk-view-body">{note}{"".join(parts)}</div>'
        '<footer class="sk-view-footer">'
        f'<button type="button" class="sk-button sk-view-close">{close}</button>'
        f"{submit_button}</footer></form>"
    )


def _input(
    block: Mapping[str, Any],
    names: Names,
    index: int,
    values: Mapping[str, Mapping[str, str]],
    errors: Mapping[str, str],
) -> str:
    block_id, action_id = input_ids(block, index)
    element = block.get("element")
    element = element if isinstance(element, Mapping) else {}
    field_id = f"sk-input-{index}"
    optional = (
        ' <span class="sk-optional">(optional)</span>' if block.get("optional") is True else ""
    )
    label = (
        f'<label class="sk-input-label" for="{field_id}">'
        f"{text_object_html(block.get('label'), names)}{optional}</label>"
    )
    error = errors.get(block_id)
    described = []
    error_html = hint_html = ""
    if error is not None:
        error_html = (
            f'<div class="sk-input-error" id="{field_id}-error" role="alert">{_esc(error)}</div>'
        )
        described.append(f"{field_id}-error")
    if isinstance(block.get("hint"), Mapping):
        hint_html = (
            f'<div class="sk-input-hint" id="{field_id}-hint">'
            f"{text_object_html(block.get('hint'), names)}</div>"
        )
        described.append(f"{field_id}-hint")
    kind = element.get("type")
    if kind in TEXT_INPUTS:
        typed = values.get(block_id, {}).get(action_id)
        value = _text(typed if typed is not None else element.get("initial_value"))
        minimum, maximum = input_limits(element)
        attributes = [
            f'id="{field_id}"',
            'class="sk-input-field"',
            f'data-block-id="{_esc(block_id)}"',
            f'data-action-id="{_esc(action_id)}"',
        ]
        if maximum is not None:
            attributes.append(f'maxlength="{maximum}"')
        if minimum is not None:
            attributes.append(f'minlength="{minimum}"')
        placeholder = element.get("placeholder")
        if isinstance(placeholder, Mapping):
            attributes.append(f'placeholder="{_esc(placeholder.get("text"))}"')
        if described:
            attributes.append(f'aria-describedby="{" ".join(described)}"')
        if error is not None:
            attributes.append('aria-invalid="true"')
        if element.get("multiline") is True:
            # The newline after the tag is dropped by HTML parsers, so a value's own leading
            # newline survives.
            field = f'<textarea {" ".join(attributes)} rows="4">\n{_esc(value)}</textarea>'
        else:
            field = f'<input type="text" {" ".join(attributes)} value="{_esc(value)}">'
    else:
        field = f'<span class="sk-element-unsupported">[{_esc(kind)} not shown here]</span>'
    css = "sk-block sk-input" + (" sk-input-invalid" if error is not None else "")
    return (
        f'<div class="{css}" data-block-id="{_esc(block_id)}">'
        f"{label}{field}{error_html}{hint_html}</div>"
    )
