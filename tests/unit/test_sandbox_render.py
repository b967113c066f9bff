"""The Slack sandbox's renderer: Block Kit → HTML, per block type and for modals, with hostile
text kept text."""

from __future__ import annotations

import time
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot import cards
from bot.demo.modals import modal_html
from bot.demo.render import (
    Names,
    ShownMessage,
    block_html,
    blocks_html,
    message_html,
    mrkdwn_html,
    plain_html,
)
from bot.demo.stripe_page import stripe_page_html
from bot.model import Change, OrderState
from bot.sandbox import stripe_objects as so

NAMES = Names(
    users={"U0ALICE": "alice", "U0BOT": "climate-bot"},
    usergroups={"S0DECIDERS": "climate-deciders"},
    channels={"C0CLIMATE": "climate"},
)

# Every tag and attribute the renderer may emit; anything else in the output is an injection.
ALLOWED_TAGS = {
    "a", "b", "i", "s", "span", "code", "pre", "time", "blockquote", "div", "hr", "figure", "img",
    "button",
    # modals
    "form", "header", "h2", "footer", "label", "textarea", "input",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "class", "href", "target", "rel", "title", "datetime", "src", "alt", "loading", "role",
    "aria-label", "type", "data-block", "data-element", "data-action-id", "data-url", "hidden",
    "data-key", "data-ts", "data-thread",
    # modals
    "data-view-id", "novalidate", "id", "for", "data-block-id", "maxlength", "minlength",
    "placeholder", "aria-describedby", "aria-invalid", "rows", "value", "disabled",
}  # fmt: skip


class Tags(HTMLParser):
    """Collects the tags, attributes and text of an HTML fragment, as a browser would read it."""

    def __init__(self, fragment: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text = ""
        self.feed(fragment)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text += data

    def links(self) -> list[str]:
        return [str(attrs["href"]) for tag, attrs in self.tags if tag == "a"]


def assert_only_our_markup(fragment: str) -> None:
    for tag, attrs in Tags(fragment).tags:
        assert tag in ALLOWED_TAGS, (tag, fragment)
        assert set(attrs) <= ALLOWED_ATTRIBUTES, (attrs, fragment)
        for name in ("href", "src", "data-url"):
            if name in attrs:
                assert str(attrs[name]).startswith(("http://", "https://")), fragment


def shown(fragment: str) -> str:
    """The text a reader sees."""
    return Tags(fragment).text


# --- mrkdwn ---------------------------------------------------------------------------------------


def test_mrkdwn_styles_bold_italic_strike_and_code():
    out = mrkdwn_html("*Order* _delayed_ ~2027~ `climorder_1` and snake_case_name")
    assert "<b>Order</b>" in out and "<i>delayed</i>" in out and "<s>2027</s>" in out
    assert '<code class="sk-code">climorder_1</code>' in out
    assert "snake_case_name" in out  # underscores inside a word are not italics


def test_styles_nest_around_mentions_as_the_decision_line_does():
    out = mrkdwn_html(
        "*Cancelled by <@U0ALICE>* · <!date^1800000000^{date_long}|15 Jan 2027>", NAMES
    )
    assert out.startswith("<b>Cancelled by ")
    assert shown(out) == "Cancelled by @alice · 15 Jan 2027"
    assert '<time class="sk-date" datetime="2027-01-15T08:00:00Z"' in out


def test_mentions_show_names_and_notify_nobody():
    out = mrkdwn_html("<@U0ALICE> <@U0NOBODY> <!subteam^S0DECIDERS> <!channel> <#C0CLIMATE>", NAMES)
    assert shown(out) == "@alice @U0NOBODY @climate-deciders @channel #climate"
    assert Tags(out).links() == []


def test_links_only_for_http_and_https():
    out = mrkdwn_html(
        "<https://dashboard.stripe.com/test/climate/orders/x?a=1&amp;b=2|Open in Stripe> "
        "<javascript:alert(1)|click me> <data:text/html,hi|data> <mailto:x@example.com|mail>"
    )
    assert Tags(out).links() == ["https://dashboard.stripe.com/test/climate/orders/x?a=1&b=2"]
    assert shown(out) == "Open in Stripe click me data mail"
    assert 'rel="noopener noreferrer"' in out


def test_entities_are_shown_as_the_characters_they_stand_for_and_never_become_html():
    out = mrkdwn_html("&lt;script&gt;alert(1)&lt;/script&gt; &amp;lt; &quot;")
    assert shown(out) == "<script>alert(1)</script> &lt; &quot;"
    assert Tags(out).tags == []


def test_raw_angle_brackets_and_quotes_stay_text():
    out = mrkdwn_html("<script>alert(1)</script> <img src=x onerror=alert(1)> \"'")
    assert_only_our_markup(out)
    assert "alert(1)" in shown(out) and "<script" not in out


def test_quotes_and_preformatted_text():
    out = mrkdwn_html("> quoted *words*\nafter\n```line 1\n<@U0ALICE> *raw*```")
    assert '<blockquote class="sk-quote">quoted <b>words</b></blockquote>' in out
    assert '<pre class="sk-pre">line 1\n&lt;@U0ALICE&gt; *raw*</pre>' in out


def test_emoji_short_codes_and_plain_text():
    assert mrkdwn_html(":white_check_mark: done :no_such_emoji:") == ("\u2705 done :no_such_emoji:")
    assert plain_html("<b>*not bold*</b> :warning:") == "&lt;b&gt;*not bold*&lt;/b&gt; \u26a0\ufe0f"
    assert plain_html(":warning:", emoji=False) == ":warning:"


def test_private_use_markers_in_input_cannot_smuggle_tokens():
    out = mrkdwn_html("\ue0000\ue001 <https://ok.example|ok>")
    assert shown(out).startswith("\ufffd0\ufffd ok")
    assert len(Tags(out).links()) == 1


@pytest.mark.timeout(20)  # a quadratic scan of these markers would take many minutes
def test_text_full_of_unclosed_markers_is_rendered_in_one_pass():
    text = "*a _b ~c " * 5_000  # 45,000 characters, each marker opening nothing
    assert shown(mrkdwn_html(text)) == text


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(list("<>&|!@#^*_~`:\"' \nabcU0-/.;=") + ["https://", "lt;", "\ue000"]),
        max_size=60,
    ).map("".join)
)
def test_any_text_renders_only_our_own_markup(text):
    assert_only_our_markup(mrkdwn_html(text, NAMES))
    assert_only_our_markup(plain_html(text))


# --- blocks ---------------------------------------------------------------------------------------


def test_header_is_plain_text():
    out = block_html({"type": "header", "text": {"type": "plain_text", "text": "*Hi* <!here>"}})
    assert out == '<div class="sk-block sk-header">*Hi* &lt;!here&gt;</div>'


def test_section_with_text_fields_and_a_button_accessory():
    block = {
        "type": "section",
        "block_id": "facts",
        "text": {"type": "mrkdwn", "text": "*Order* placed"},
        "fields": [
            {"type": "mrkdwn", "text": "*Total*\n$5,665.00"},
            {"type": "plain_text", "text": "10 t"},
        ],
        "accessory": {
            "type": "button",
            "action_id": "open",
            "text": {"type": "plain_text", "text": "Open"},
            "value": "secret-value",
        },
    }
    out = block_html(block, NAMES, index=3)
    assert '<div class="sk-text"><b>Order</b> placed</div>' in out
    assert '<div class="sk-field"><b>Total</b>\n$5,665.00</div>' in out
    assert '<div class="sk-field">10 t</div>' in out
    assert 'data-block="3" data-element="accessory" data-action-id="open"' in out
    assert "secret-value" not in out  # values stay on the server, as in Slack's client
    assert_only_our_markup(out)


def test_section_with_an_image_accessory():
    out = block_html(
        {
            "type": "section",
            "text": {"type": "plain_text", "text": "Heirloom"},
            "accessory": {"type": "image", "image_url": "https://x.example/a.png", "alt_text": "a"},
        }
    )
    assert '<img class="sk-accessory-image" src="https://x.example/a.png" alt="a"' in out


def test_context_mixes_text_and_images():
    out = block_html(
        {
            "type": "context",
            "elements": [
                {"type": "image", "image_url": "https://x.example/logo.png", "alt_text": "Stripe"},
                {"type": "mrkdwn", "text": "Subtotal *$5,500.00*"},
                {"type": "plain_text", "text": "Test mode"},
            ],
        }
    )
    assert out.startswith('<div class="sk-block sk-context"><img class="sk-context-image"')
    assert shown(out) == "Subtotal $5,500.00Test mode"


def test_divider():
    assert block_html({"type": "divider"}) == '<hr class="sk-block sk-divider">'


def test_image_block_with_title_and_a_refused_url():
    good = block_html(
        {
            "type": "image",
            "image_url": "https://x.example/certificate.png",
            "alt_text": 'cert" onload="x',
            "title": {"type": "plain_text", "text": "Certificate"},
        }
    )
    assert '<div class="sk-image-title">Certificate</div>' in good
    assert 'alt="cert&quot; onload=&quot;x"' in good
    bad = block_html({"type": "image", "image_url": "javascript:alert(1)", "alt_text": "x"})
    assert "<img" not in bad and "javascript" not in bad


def test_actions_buttons_with_styles_a_confirm_dialog_and_a_link():
    block = {
        "type": "actions",
        "block_id": "decide",
        "elements": [
            {
                "type": "button",
                "action_id": "accept_change",
                "style": "primary",
                "text": {"type": "plain_text", "text": "Accept delay"},
                "value": "climorder_1",
            },
            {
                "type": "button",
                "action_id": "cancel_order",
                "style": "danger",
                "text": {"type": "plain_text", "text": "Cancel order"},
                "value": "climorder_1",
                "confirm": {
                    "title": {"type": "plain_text", "text": "Cancel this order?"},
                    "text": {"type": "plain_text", "text": "Refund <b>$5,665.00</b>?"},
                    "confirm": {"type": "plain_text", "text": "Cancel order"},
                    "deny": {"type": "plain_text", "text": "Keep it"},
                    "style": "danger",
                },
            },
            {
                "type": "button",
                "action_id": "docs",
                "text": {"type": "plain_text", "text": "Docs"},
                "url": "https://stripe.com/docs/climate",
            },
            {"type": "static_select", "action_id": "pick"},
        ],
    }
    out = block_html(block, index=5)
    assert (
        '<button class="sk-button sk-primary" type="button" data-block="5" data-element="0"' in out
    )
    assert 'class="sk-button sk-danger" type="button" data-block="5" data-element="1"' in out
    assert (
        '<span class="sk-confirm" hidden><span class="sk-confirm-title">Cancel this order?' in out
    )
    assert "Refund &lt;b&gt;$5,665.00&lt;/b&gt;?" in out
    assert '<span class="sk-confirm-yes sk-danger">Cancel order</span>' in out
    assert 'data-url="https://stripe.com/docs/climate"' in out
    assert "[static_select]" in out
    assert_only_our_markup(out)


def test_unknown_and_malformed_blocks_render_as_a_note_or_nothing():
    assert "[&lt;script&gt; block not shown here]" in block_html({"type": "<script>"})
    assert block_html("not a block") == ""
    assert blocks_html("not a list") == ""
    assert block_html({"type": "section", "text": "not an object", "fields": "x"}) == (
        '<div class="sk-block sk-section"><div class="sk-section-body">'
        '<div class="sk-text"></div></div></div>'
    )


# --- whole messages -------------------------------------------------------------------------------


def test_a_real_delayed_card_renders_with_its_buttons_and_hostile_beneficiary_as_text():
    now = int(time.time())
    order = so.order(beneficiary={"public_name": "<!channel> <https://evil.example|x> *Corp*"})
    state = OrderState(
        order=order,
        product=so.product(),
        headline_event="climate.order.delayed",
        change=Change(kind="delayed", at=now, old_year=2027, new_year=2028),
    )
    card = cards.order_card(state, now)
    out = message_html(
        ShownMessage(key="1.000100", ts="1.000100", text=card.text, blocks=card.blocks,
                     user="U0BOT", is_bot=True, reply_count=2),
        NAMES,
    )  # fmt: skip
    assert_only_our_markup(out)
    text = shown(out)
    assert "Order delayed — decision needed" in text
    # Stripe's words, as text: its asterisks are look-alikes, so "Corp" is not bold.
    assert "<!channel> <https://evil.example|x> \u2217Corp\u2217" in text
    assert "https://evil.example" not in Tags(out).links()
    assert "Accept delay" in text and "Cancel order" in text and "2 replies" in text
    assert "climate-bot" in text and "APP" in text


def test_an_ephemeral_says_only_you_see_it():
    out = message_html(
        ShownMessage(key="e2.000200", ts="2.000200", text="Only <@U0ALICE> may decide.",
                     blocks=[], user="U0BOT", is_bot=True, ephemeral=True),
        NAMES,
    )  # fmt: skip
    assert 'class="sk-msg sk-ephemeral" data-key="e2.000200"' in out
    assert "Only visible to you" in shown(out) and "Only @alice may decide." in shown(out)


def test_a_reply_also_sent_to_the_channel_says_so_and_links_its_thread():
    out = message_html(
        ShownMessage(key="4.000400", ts="4.000400", text="Delayed: decide by Friday", blocks=[],
                     user="U0BOT", is_bot=True, thread_ts="1.000100", broadcast=True),
        NAMES,
    )  # fmt: skip
    assert_only_our_markup(out)
    assert 'class="sk-replies" data-thread="1.000100">View thread</button>' in out
    assert "replied to a thread" in shown(out) and "Also sent to the channel" in shown(out)
    assert "sk-broadcast" not in message_html(
        ShownMessage(key="5.0", ts="5.0", text="x", blocks=[])
    )


def test_a_person_s_message_shows_their_name_and_no_app_badge():
    out = message_html(
        ShownMessage(key="3.0", ts="3.0", text="&lt;b&gt;hi&lt;/b&gt;", blocks=[], user="U0ALICE")
    )
    assert "APP" not in shown(out) and "<b>hi</b>" in shown(out)
    assert_only_our_markup(out)


# --- modals ---------------------------------------------------------------------------------------

HOSTILE = '<script>alert(1)</script> " onfocus="alert(2) <!channel> &amp;'


def cancel_view(**changes) -> dict:
    """A view shaped like climate-bot's cancel dialog, every text in it hostile."""
    plain = {"type": "plain_text", "text": HOSTILE}
    view = {
        "id": "V0000000042",
        "type": "modal",
        "callback_id": "cancel_order",
        "title": {"type": "plain_text", "text": "Cancel order"},
        "submit": {"type": "plain_text", "text": "Cancel order"},
        "close": {"type": "plain_text", "text": "Keep it"},
        "blocks": [
            {"type": "header", "text": plain},
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": "*Refund* $5,665.00 &lt;b&gt; <!channel>"},
                "fields": [{"type": "mrkdwn", "text": "*Order*\n`climorder_1`"}, plain],
            },
            {"type": "divider"},
            {"type": "context", "elements": [plain]},
            {
                "type": "input",
                "block_id": "reason",
                "optional": True,
                "label": plain,
                "hint": plain,
                "element": {
                    "type": "plain_text_input",
                    "action_id": "reason",
                    "multiline": True,
                    "max_length": 500,
                    "placeholder": plain,
                },
            },
            {
                "type": "input",
                "label": {"type": "plain_text", "text": "One line"},
                "element": {"type": "plain_text_input", "initial_value": HOSTILE},
            },
            {"type": "input", "label": plain, "element": {"type": "static_select"}},
        ],
    }
    return {**view, **changes}


def test_a_modal_has_its_title_blocks_inputs_and_buttons_and_keeps_every_text_text():
    out = modal_html(
        cancel_view(),
        NAMES,
        values={"reason": {"reason": "\n" + HOSTILE + "</textarea>"}},
        errors={"reason": HOSTILE},
        banner=HOSTILE,
    )
    assert_only_our_markup(out)
    assert out.startswith('<form class="sk-view" data-view-id="V0000000042" novalidate>')
    tags = Tags(out).tags
    assert ("h2", {"class": "sk-view-title", "id": "sk-view-title"}) in tags
    assert '<h2 class="sk-view-title" id="sk-view-title">Cancel order</h2>' in out
    assert '<div class="sk-block sk-header">' in out and '<hr class="sk-block sk-divider">' in out
    assert "<b>Refund</b> $5,665.00 &lt;b&gt; " in out and "@channel" in shown(out)
    [textarea] = [attrs for tag, attrs in tags if tag == "textarea"]
    assert textarea["data-block-id"] == "reason" and textarea["data-action-id"] == "reason"
    assert textarea["maxlength"] == "500" and textarea["aria-invalid"] == "true"
    assert textarea["placeholder"] == HOSTILE  # an attribute value, never markup
    # What was typed, leading newline included, comes back as the field's text.
    assert 'rows="4">\n\n&lt;script&gt;alert(1)&lt;/script&gt;' in out
    assert "&lt;/textarea&gt;</textarea>" in out
    [line] = [attrs for tag, attrs in tags if tag == "input"]
    assert line["value"] == HOSTILE and line["data-block-id"] == "input5"  # ids made up as Slack
    assert (line["data-action-id"], "maxlength" in line) == ("element5", False)
    assert '<span class="sk-optional">(optional)</span>' in out
    assert out.count("(optional)") == 1  # the other inputs are required
    assert '<div class="sk-input-error" id="sk-input-4-error" role="alert">&lt;script&gt;' in out
    assert '<div class="sk-view-banner" role="alert">&lt;script&gt;' in out
    assert "[static_select not shown here]" in out
    assert '<button type="button" class="sk-button sk-view-close">Keep it</button>' in out
    assert '<button type="submit" class="sk-button sk-primary sk-view-submit">Cancel order' in out
    assert "<script" not in out and 'onfocus="' not in out


def test_a_modal_without_submit_or_close_gets_slack_s_cancel_only():
    out = modal_html({"type": "modal", "title": {"type": "plain_text", "text": "Done"}})
    assert "sk-view-submit" not in out and ">Cancel</button>" in out
    assert_only_our_markup(out)
    assert modal_html("not a view").startswith('<form class="sk-view" data-view-id=""')
    busy = modal_html(cancel_view(), busy=True)
    assert 'class="sk-button sk-primary sk-view-submit" disabled>' in busy


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(list("<>&|!@#*_\"' \nabc=/") + ["</textarea>", "&lt;", "\ue000"]),
        max_size=40,
    ).map("".join)
)
def test_any_typed_text_or_error_renders_only_our_own_markup(text):
    out = modal_html(
        cancel_view(title={"type": "plain_text", "text": text}),
        values={"reason": {"reason": text}},
        errors={"reason": text, "input5": text},
        banner=text,
    )
    assert_only_our_markup(out)
    textareas = [attrs for tag, attrs in Tags(out).tags if tag == "textarea"]
    assert len(textareas) == 1  # the typed text never closes its field


def test_stripe_page_escapes_what_stripe_holds():
    order = so.order(beneficiary={"public_name": "<script>x</script>"}, currency="jpy")
    out = stripe_page_html([order], [so.product(prices={"usd": 56650, "jpy": 84975})])
    assert "&lt;script&gt;x&lt;/script&gt;" in out and "<script>" not in out
    assert "849,750 JPY" in out and "566.50 USD" in out
