from hypothesis import given
from hypothesis import strategies as st

from ibisagent.env.protocol import SYSTEM_PROMPT, format_check, format_response, parse_response, refinement_turn_text


def test_parses_released_click_turn():
    a = parse_response("<think>\nliver is left\n</think>\n<action>\nPositive Point (0.4120, 0.5531)\n</action>")
    assert (a.kind, a.x, a.y, a.think) == ("positive", 0.412, 0.5531, "liver is left")
    assert a.to_pixel(1000, 200) == (412, 110)


def test_parses_negative_and_both_stop_spellings():
    assert parse_response("<think>x</think><action>Negative Point (0.1, 0.9)</action>").kind == "negative"
    for word in ("Terminate", "Termination"):
        a = parse_response(f"<think>ok</think><action>\n{word}\n</action>\n<answer>The liver.</answer>")
        assert a.kind == "stop" and a.answer == "The liver."


def test_malformed_turns_say_what_is_wrong():
    cases = {
        "no tags at all": "block missing",
        "<think>a</think><action>Positive Point (0.5, 0.5)": "not closed",
        "<action>Jump (1, 2)</action>": "unrecognised",
        "<action>Positive Point (1.5, 0.2)</action>": "outside",
        "<action>Positive Point (nan, 0.2)</action>": "not finite",
        "<action>Terminate</action><action>Terminate</action>": "2 <action>",
    }
    for text, expected in cases.items():
        a = parse_response(text)
        assert a.kind == "invalid" and expected in a.error, (text, a.error)


def test_format_check_matches_s_format():
    assert format_check(format_response("why", "positive", 0.25, 0.5)) is None
    assert "answer" in format_check("<think>a</think><action>Terminate</action>")
    assert "think" in format_check("<action>Terminate</action><answer>x</answer>")


def test_formatter_round_trips_four_decimals():
    text = format_response("reason", "negative", 0.123456, 0.9)
    assert "Negative Point (0.1235, 0.9000)" in text
    a = parse_response(text)
    assert (a.kind, a.x, a.y) == ("negative", 0.1235, 0.9)


def test_prompts_are_the_released_ones():
    assert SYSTEM_PROMPT.startswith("You are a precise and expert medical segmentation agent.")
    assert SYSTEM_PROMPT.endswith("you must also append a final, concise summary in an <answer> tag.")
    assert refinement_turn_text("Segment the liver").startswith(
        '<image>This is a refinement step. User\'s original query: "Segment the liver".'
    )


@given(st.text(max_size=300))
def test_parser_never_raises(text):
    a = parse_response(text)
    assert a.kind in ("positive", "negative", "stop", "invalid")
