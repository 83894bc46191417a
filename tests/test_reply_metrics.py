"""Reply metrics a reader can check: loops, cut-offs, fluency, the asked-for artist, the guard.

The functions are tested on hand-written replies, ``reply_report`` on a scripted engine
(what it says with and without its guard is fixed), and fluency on SmolLM2 (the ``tiny``
base model has random weights, so it only checks the batching there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from talkplay.catalog import Catalog, Conversation, Track, Turn
from talkplay.engine.protocol import Recommendation, Response
from talkplay.evaluate.fluency import Fluency
from talkplay.evaluate.protocols import make_cases
from talkplay.evaluate.replies import is_cut_off, repeats_trigram, reply_report
from talkplay.evaluate.report import md_cell, replies_markdown

CLEAN = ["Sure! Here are more songs by Jerry Lee Lewis.", "Songs you might like.", 'Try "Stay" now.',
         "Enjoy these! 🎶", "Here you go (enjoy!)", "Wait…"]


def test_repeats_and_cut_offs_are_caught_and_clean_replies_pass():
    assert repeats_trigram("I added a few more songs by songs by songs by songs.")
    assert repeats_trigram("Songs, by songs BY songs.")  # case and punctuation do not hide a loop
    for cut in ["Here are some songs by", "Here are some songs by.", "", "   ", "Tracks of the...",
                "Enjoy these 🎶"]:
        assert is_cut_off(cut), cut
    for text in CLEAN:
        assert not is_cut_off(text) and not repeats_trigram(text), text


def test_markdown_cells_escape_pipes_and_line_breaks():
    assert md_cell("a | b\nc") == "a \\| b<br>c"
    result = {"name": "x", "systems": {"talkplay": {"replies": [
        {"conversation": "c", "turn": 0, "request": "rock | pop", "cards": ['"A" by B'], "reply": "one\ntwo",
         "human_reply": "", "cut_off": True, "repeats_trigram": False, "unfaithful": []}]}}}
    table = replies_markdown(result)
    row = table.splitlines()[-1]
    assert "rock \\| pop" in row and "one<br>two" in row and "cut off" in row
    assert len(re.findall(r"(?<!\\)\|", row)) == 7  # six cells: none spilled into another


@dataclass
class Scripted:
    """An engine whose answer is fixed: track ``a`` with a faithful reply when guarded,
    an unfaithful one when not."""

    cfg: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(guard_replies=True))
    device: str = "cpu"

    @property
    def guards_replies(self) -> bool:
        return self.cfg.guard_replies

    def respond(self, conversation: Conversation, k: int = 3, exclude=()) -> Response:
        reply = "Here is Love Me Do by The Beatles." if self.cfg.guard_replies else 'Try "Stay" by Rihanna.'
        return Response([Recommendation("a", 0.0)], reply)


CATALOG = Catalog([Track(id="a", title="Love Me Do", artists=["The Beatles"]),
                   Track(id="c", title="Stay", artists=["Rihanna"])], [])


def test_reply_report_scores_both_passes_the_asked_artist_and_keeps_the_human_reply():
    convs = [Conversation(id="c1", turns=[Turn(user="something by The Beatles please",
                                               assistant="Sure, some Beatles.", recommended=["a"])])]
    cases = make_cases("next-track", convs, CATALOG.ids())
    engine = Scripted()
    rep = reply_report(engine, cases, CATALOG, limit=5, conversations=convs)
    assert engine.cfg.guard_replies  # the second pass restored the guard
    assert rep["reply_faithfulness"] == 1.0 and rep["reply_faithfulness_unguarded"] == 0.0
    assert rep["artist_grounding"] == 1.0 and rep["requests_naming_card_artist"] == 1
    assert rep["cut_off_rate"] == 0.0 and rep["repeated_trigram_rate"] == 0.0
    assert rep["fluency"] is None and rep["fluency_model"] is None  # no base model given
    r = rep["replies"][0]
    assert r["human_reply"] == "Sure, some Beatles." and r["unguarded_reply"] == 'Try "Stay" by Rihanna.'
    assert r["cards"] == ['"Love Me Do" by The Beatles'] and r["nll"] is None
    # an engine that does not guard gets no second pass
    engine.cfg.guard_replies = False
    rep = reply_report(engine, cases, CATALOG, limit=5)
    assert rep["reply_faithfulness_unguarded"] is None and rep["replies"][0]["unguarded_reply"] is None
    assert rep["replies"][0]["human_reply"] == ""


def test_fluency_scores_each_reply_alone_whatever_its_batch():
    scorer = Fluency.load("tiny", batch_size=3)
    pairs = [("play jazz", "Here is a calm jazz track."), ("rock", ""),
             ("x", "A much longer reply, with more words in it than the rest.")]
    batched = scorer.nll(pairs)
    alone = [Fluency.load("tiny", batch_size=1).nll([p])[0] for p in pairs]
    assert batched[1] is None and alone[1] is None
    assert batched[0] == pytest.approx(alone[0], abs=1e-3) and batched[2] == pytest.approx(alone[2], abs=1e-3)


@pytest.mark.slow
def test_fluency_prefers_a_sentence_to_the_same_words_shuffled():
    scorer = Fluency.load("smollm2-135m")
    fluent = "Sure! Here are some calm jazz songs for a quiet evening at home."
    salad = "evening jazz quiet Here home. some at for Sure! songs a calm are"
    good, bad = scorer.nll([("Play some calm jazz.", fluent), ("Play some calm jazz.", salad)])
    assert good < bad - 1.0, (good, bad)
