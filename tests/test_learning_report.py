"""What learning adds, as `talkplay eval` reports it: the untrained start as a row, turns
sliced by whether they name music, and the follow-up probe's echo rate."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from talkplay.baselines import CatalogRecommender
from talkplay.catalog import Catalog, Conversation, Track, Turn
from talkplay.cli import app
from talkplay.evaluate.probe import (
    CHIT_CHAT,
    FOLLOW_UPS,
    KINDS,
    NAMES_ARTIST,
    content_words,
    follow_up_probe,
    probe_cases,
)
from talkplay.evaluate.protocols import EvalCase
from talkplay.evaluate.turns import FOLLOW_UP, NAMES_MUSIC, OPENING, CatalogMentions, turn_kinds
from talkplay.run import Run


def test_turns_are_sliced_by_whether_they_name_music():
    catalog = Catalog([Track(id="a", title="Thank You", artists=["Bruno Mars"]),
                       Track(id="b", title="All My Life", artists=["K-Ci & JoJo"]),
                       Track(id="c", title="Intro", artists=["Yes"])])
    conv = Conversation(id="c", turns=[Turn(user="hello, a dinner playlist please"),
                                       Turn(user="i like bruno mars"),
                                       Turn(user="Thank you! yes, a couple more"),
                                       Turn(user="add all my life too")])
    kinds = turn_kinds([conv], CatalogMentions(catalog))
    # a short title is an ordinary phrase and a three-letter band an ordinary word; case is ignored
    assert [kinds[("c", i)] for i in range(4)] == [OPENING, NAMES_MUSIC, FOLLOW_UP, NAMES_MUSIC]
    assert CatalogMentions(catalog).names_music('play "Thank You"')  # quoted, it is the title


class _Fixed(CatalogRecommender):
    """Ranks by a fixed per-title function of the last user message."""

    def __init__(self, score) -> None:  # noqa: ANN001
        super().__init__()
        self.score = score

    def scores(self, conversation: Conversation) -> np.ndarray:
        said = content_words(conversation.turns[-1].user)
        assert self.catalog is not None
        return np.array([self.score(t, said) for t in self.catalog.tracks], dtype=float)


def _probe_world() -> tuple[Catalog, list[EvalCase]]:
    words = sorted({w for text, kind in FOLLOW_UPS if kind != NAMES_ARTIST for w in content_words(text)})
    titled = [Track(id=f"w{i}", title=f"{w.title()} {s}", artists=["Ensemble"])
              for i, (w, s) in enumerate((w, s) for w in words for s in ("Zq", "Xv", "Kj"))]
    plain = [Track(id=f"p{i}", title=f"Opus {i}", artists=["Quartet"]) for i in range(30)]
    catalog = Catalog(titled + plain)
    cases = [EvalCase(f"c{i}", 1, Conversation(id=f"c{i}", turns=[
        Turn(user="some chamber music", recommended=[f"p{i}"], liked=[f"p{i}"]), Turn(user="more strings")]),
        gold=[f"p{i + 1}"], exclude=frozenset({f"p{i}"})) for i in range(len(FOLLOW_UPS) * 2)]
    return catalog, cases


def test_the_echo_rate_catches_a_system_that_matches_chit_chat_against_titles():
    catalog, cases = _probe_world()
    by_title = _Fixed(lambda t, said: len(content_words(t.title) & said))
    ignores = _Fixed(lambda t, said: float(t.id.startswith("p")))
    for rec in (by_title, ignores):
        rec.fit_catalog(catalog, [])
    probe = probe_cases(cases, catalog)
    echo = follow_up_probe(by_title, probe, catalog)
    assert echo["n"] == len(cases) and 0 < echo["n_echo"] < len(cases)  # follow-ups with names excluded
    assert echo["echo_rate"] >= 0.3
    quiet = follow_up_probe(ignores, probe, catalog)
    assert quiet["echo_rate"] == 0.0
    # a system deaf to chit-chat ranks the real request the same with a follow-up before it
    assert quiet["with_follow_up"] == quiet["without"] and set(quiet["go_on"]) == {"hit@10", "mrr@100"}
    # with / without per kind of follow-up: every case in one kind, the same turns with and without
    for report in (echo, quiet):
        assert set(report["by_kind"]) == set(KINDS)
        assert sum(k["n"] for k in report["by_kind"].values()) == len(cases)
    assert all(k["with_follow_up"] == k["without"] for k in quiet["by_kind"].values())
    # a system that ranks the playlist's kind of track first, and titles sharing a word with the
    # message above it: chit-chat before the request pushes those titles above the answer
    echoing = _Fixed(lambda t, said: len(content_words(t.title) & said) + 0.5 * t.id.startswith("p"))
    echoing.fit_catalog(catalog, [])
    chat = follow_up_probe(echoing, probe, catalog)["by_kind"][CHIT_CHAT]
    assert chat["with_follow_up"]["mrr@100"] < chat["without"]["mrr@100"]


@pytest.fixture(scope="module")
def encoded_run(tmp_path_factory):
    """Real titles with real text embeddings and CPCD-style conversations, no model."""
    from talkplay.dialogs import DialogsConfig, build_dialogs
    from talkplay.encoders import EncodeConfig, encode_run

    run = Run(tmp_path_factory.mktemp("untrained") / "run")
    songs = [("Blue Train", "John Coltrane"), ("So What", "Miles Davis"), ("Take Five", "Dave Brubeck"),
             ("One Love", "Bob Marley"), ("Redemption Song", "Bob Marley"), ("Bamboleo", "Gipsy Kings"),
             ("Thank You", "Dido"), ("Back in Black", "AC/DC"), ("Paranoid", "Black Sabbath"),
             ("Clair de Lune", "Claude Debussy"), ("Gymnopedie No.1", "Erik Satie"), ("Hurt", "Johnny Cash")]
    Catalog([Track(id=f"s{i}", title=t, artists=[a]) for i, (t, a) in enumerate(songs)]).save(run.path)
    encode_run(run, EncodeConfig(modalities=("metadata",)))
    build_dialogs(run, DialogsConfig(synthesize=24))
    return run


def test_the_untrained_start_is_a_row_of_every_report(encoded_run):
    out = CliRunner().invoke(app, ["eval", str(encoded_run.path), "--protocol", "next-track", "--n-boot", "0",
                                   "--no-plots", "--replies", "0", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert "untrained" in report["systems"] and "talkplay" not in report["systems"]  # no model yet
    row = report["systems"]["untrained"]
    assert 0 < row["all"]["macro"]["hit@10"] <= 1
    assert set(row["by_turn"]) <= {NAMES_MUSIC, OPENING, FOLLOW_UP} and row["by_turn"]
    # the untrained start reads the request: a named title ranks its own track first
    from talkplay.baselines import make_baseline

    rec = make_baseline("untrained")
    rec.fit(encoded_run)
    top = rec.recommend(Conversation(id="q", turns=[Turn(user="Redemption Song by Bob Marley")]), k=2)
    assert top[0][0] == "s4"


def test_training_chit_chat_shares_no_content_word_with_the_probe():
    from talkplay.dialogs.build import FOLLOW_UP_TEMPLATES

    taught = set().union(*(content_words(t) for t in FOLLOW_UP_TEMPLATES))
    probed = set().union(*(content_words(t) for t, _ in FOLLOW_UPS))
    assert taught and probed and not taught & probed
