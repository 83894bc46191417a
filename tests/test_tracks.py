"""Content-grounded tracks: training end to end, the engine, cold start through HTTP, bad input."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest
import torch

from synth_run import build_synth_run, held_out_turns, run_files
from talkplay.atomic import save_npy_atomic
from talkplay.catalog import Catalog, Conversation, Track, Turn
from talkplay.engine import ContentEngine, Engine
from talkplay.errors import StaleArtifactError
from talkplay.run import Run
from talkplay.tracks import TrackFeatures
from talkplay.train import TrainConfig, train_run

RAW = re.compile(r"<\|/?music\|>|<\|track\|>")
TINY = dict(base_model="tiny", track_repr="content", lora=False, init="mean_cov", batch_size=16,
            lr=3e-3, max_length=256, save_every=1000)

# real titles and artists, so the text encoder's embeddings mean something
SONGS = [("Blue in Green", "Miles Davis"), ("So What", "Miles Davis"), ("Take Five", "Dave Brubeck"),
         ("Hotel California", "Eagles"), ("Bohemian Rhapsody", "Queen"), ("Africa", "Toto"),
         ("Dancing Queen", "ABBA"), ("Billie Jean", "Michael Jackson"), ("Hey Jude", "The Beatles"),
         ("Wonderwall", "Oasis"), ("Smells Like Teen Spirit", "Nirvana"), ("Clair de Lune", "Claude Debussy"),
         ("Gymnopedie No. 1", "Erik Satie"), ("The Four Seasons: Spring", "Antonio Vivaldi"),
         ("Jolene", "Dolly Parton"), ("Ring of Fire", "Johnny Cash"), ("No Woman, No Cry", "Bob Marley"),
         ("Three Little Birds", "Bob Marley"), ("Lose Yourself", "Eminem"), ("Juicy", "The Notorious B.I.G."),
         ("Around the World", "Daft Punk"), ("Windowlicker", "Aphex Twin"), ("Hallelujah", "Leonard Cohen"),
         ("Blowin' in the Wind", "Bob Dylan")]
ADDED = [("Paranoid Android", "Radiohead"), ("Waterloo Sunset", "The Kinks"), ("Teardrop", "Massive Attack")]


@pytest.fixture(scope="module")
def synth_content(tmp_path_factory):
    run = build_synth_run(tmp_path_factory.mktemp("synth-content") / "run")
    summary = train_run(run, TrainConfig(**TINY, max_steps=150))
    return run, summary


def test_content_model_learns_known_answers(synth_content):
    run, summary = synth_content
    assert summary["track_repr"] == "content" and summary["steps"] == 150
    assert json.loads((run.model_dir / "talkplay.json").read_text())["track_repr"] == "content"
    assert (run.model_dir / "tracks.pt").exists() and (run.model_dir / "tracks.json").exists()
    log = [json.loads(x) for x in (run.path / "train" / "log.jsonl").read_text().splitlines()]
    assert np.mean([x["track_loss"] for x in log[-10:]]) < 0.25 * np.mean([x["track_loss"] for x in log[:5]])
    engine = Engine.load(run.path)
    assert isinstance(engine, ContentEngine) and isinstance(engine, Engine)
    assert ContentEngine.__mro__ == (ContentEngine, object)  # a sibling: nothing inherited to raise
    turns = held_out_turns(run)
    hits = [engine.recommend(conv, k=1)[0].track_id == gold for conv, gold in turns]
    assert len(hits) >= 40 and sum(hits) / len(hits) >= 0.9


def test_engine_ranks_whole_catalog_masks_seen_tracks_and_replies_in_text(synth_content):
    run, _ = synth_content
    engine = Engine.load(run.path)
    n = len(run.load_catalog(validate=False))
    conv = Conversation(id="c", turns=[Turn(user="play some jazz music", recommended=["t0"], liked=["t0"]),
                                       Turn(user="i want reggae", recommended=["t1"], disliked=["t1"]),
                                       Turn(user="any tango tracks?")])
    recs = engine.recommend(conv, k=n, exclude={"t5"})
    ids = [r.track_id for r in recs]
    assert len(ids) == len(set(ids)) == n - 3 and not {"t0", "t1", "t5"} & set(ids)
    assert ids[0] == "t3"  # tango
    scores = [r.score for r in recs]
    assert scores == sorted(scores, reverse=True) and all(s <= 0 for s in scores)  # log-probabilities
    items = list(engine.stream_respond(conv, k=2))
    assert [r.track_id for r in items[:2]] == ids[:2]
    reply = "".join(x for x in items[2:] if isinstance(x, str))
    assert not RAW.search(reply)
    resp = engine.respond(conv, k=2)
    assert [r.track_id for r in resp.recommendations] == ids[:2] and resp.method == "exact"


def test_time_budget_and_resume(tmp_path):
    import dataclasses

    run = build_synth_run(tmp_path / "run", n_train=48)
    # no time budget: the schedule then depends on the step alone, so a run resumed from the
    # step-4 checkpoint of a 6-step run must retrace that run's last steps loss for loss
    steady = TrainConfig(**{**TINY, "save_every": 4, "time_budget": 0.0}, max_steps=6)

    def losses() -> dict[int, list[float]]:
        log = [json.loads(x) for x in (run.path / "train" / "log.jsonl").read_text().splitlines()]
        return {h["step"]: [h["loss"], h["track_loss"]] for h in log if h["step"] > 4}

    out = train_run(run, steady)
    assert out["steps"] == 6 and (run.checkpoints_dir / "content.pt").exists()
    whole = losses()
    again = train_run(run, dataclasses.replace(steady, resume=True))
    assert again["resumed_from"] and again["steps"] == 6
    resumed = losses()
    assert sorted(resumed) == sorted(whole) == [5, 6]
    for step in (5, 6):  # the log rounds to 4 decimals
        assert resumed[step] == pytest.approx(whole[step], rel=1e-3, abs=1e-3), (step, resumed, whole)
    # a budget far below one step's time stops after the first step, with the schedule complete
    quick = train_run(run, TrainConfig(**TINY, max_steps=1000, time_budget=1e-6))
    assert quick["steps"] == 1
    assert json.loads((run.path / "train" / "log.jsonl").read_text().splitlines()[0])["step"] == 1


def test_resume_continues_with_the_losses_of_the_uninterrupted_run(tmp_path):
    import time

    from talkplay.tracks.train import CHECKPOINT, _save_checkpoint, prepare, step

    cfg = TrainConfig(**{**TINY, "batch_size": 4, "modality_dropout": 0.5}, max_steps=6)
    full_run = build_synth_run(tmp_path / "full", n_train=48)
    train_run(full_run, cfg)
    full = [json.loads(x)["loss"] for x in (full_run.path / "train" / "log.jsonl").read_text().splitlines()]
    # the same training stopped after its third step, as an interruption leaves it
    run = build_synth_run(tmp_path / "cut", n_train=48)
    s = prepare(run, cfg)
    t0 = time.perf_counter()
    first = [step(s, t0)["loss"] for _ in range(3)]
    _save_checkpoint(run.checkpoints_dir / CHECKPOINT, s.acc.unwrap_model(s.model), s.opt, s.state)
    again = train_run(run, TrainConfig(**{**TINY, "batch_size": 4, "modality_dropout": 0.5}, max_steps=6,
                                       resume=True))
    assert again["resumed_from"] and again["steps"] == 6
    rest = [json.loads(x)["loss"] for x in (run.path / "train" / "log.jsonl").read_text().splitlines()]
    assert first + rest == pytest.approx(full, rel=1e-5, abs=1e-6)


def test_track_without_content_gets_a_row_and_one_warning(tmp_path, caplog):
    run = build_synth_run(tmp_path / "run", n_train=48)
    for m in ("tags", "metadata"):
        mask = np.load(run.embeddings_dir / f"{m}.mask.npy")
        mask[3] = False
        save_npy_atomic(run.embeddings_dir / f"{m}.mask.npy", mask)
    with caplog.at_level(logging.WARNING):
        feats = TrackFeatures.from_run(run)
    warned = [r for r in caplog.records if "no content" in r.getMessage()]
    assert len(warned) == 1 and "t3" in warned[0].getMessage()
    train_run(run, TrainConfig(**TINY, max_steps=2))
    engine = Engine.load(run.path)
    assert feats.empty() == ["t3"] and bool(engine.rows[3].norm() > 0)
    assert "t3" in {r.track_id for r in engine.recommend(Conversation(id="c", turns=[Turn(user="x")]), k=16)}


def test_changed_embedding_dimension_or_model_is_a_stale_model(tmp_path):
    run = build_synth_run(tmp_path / "run", n_train=48)
    mini = {"model": "all-MiniLM-L6-v2"}
    run.record("encode", {"modalities": {"tags": mini, "metadata": mini}})
    train_run(run, TrainConfig(**TINY, max_steps=1))
    # the same size from another model (as `talkplay encode --text-model enc-b --force` records it)
    run.record("encode", {"modalities": {"tags": {"model": "enc-b"}, "metadata": mini}})
    with pytest.raises(StaleArtifactError) as e:
        Engine.load(run.path)
    msg = str(e.value)
    assert "tags.npy" in msg and "enc-b" in msg and "metadata" not in msg
    assert "--text-model all-MiniLM-L6-v2" in msg
    run.record("encode", {"modalities": {"tags": mini}})
    Engine.load(run.path)
    save_npy_atomic(run.embeddings_dir / "tags.npy", np.zeros((16, 5), np.float32))
    with pytest.raises(StaleArtifactError) as e:
        Engine.load(run.path)
    assert "tags.npy" in str(e.value) and "5-d" in str(e.value) and "encode" in str(e.value)


@pytest.fixture(scope="module")
def songs_run(tmp_path_factory):
    """A small catalog of real titles with real text embeddings and a briefly trained model."""
    from talkplay.dialogs import DialogsConfig, build_dialogs
    from talkplay.encoders import EncodeConfig, encode_run

    run = Run(tmp_path_factory.mktemp("songs") / "run")
    Catalog([Track(id=f"s{i}", title=t, artists=[a]) for i, (t, a) in enumerate(SONGS)]).save(run.path)
    encode_run(run, EncodeConfig(modalities=("metadata",)))
    build_dialogs(run, DialogsConfig(synthesize=24))
    train_run(run, TrainConfig(**TINY, max_steps=30))
    return run


def test_cold_start_tracks_added_after_training_are_served(songs_run, live_server_factory, tmp_path):
    import httpx
    from typer.testing import CliRunner

    from talkplay.cli import app

    rows = [{"id": f"new{i}", "title": t, "artists": [a]} for i, (t, a) in enumerate(ADDED)]
    rows.append({"id": "twin", "title": SONGS[3][0], "artists": [SONGS[3][1]]})  # same metadata as s3
    path = tmp_path / "new.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    before = (songs_run.model_dir / "tracks.pt").read_bytes()
    cli = CliRunner()
    assert cli.invoke(app, ["catalog", "add", str(songs_run.path), str(path)]).exit_code == 0
    with pytest.raises(StaleArtifactError) as e:  # added, not yet encoded: the command says what to run
        Engine.load(songs_run.path)
    assert "metadata.npy" in str(e.value) and "4 track(s) were added" in str(e.value)
    assert f"talkplay encode {songs_run.path}" in str(e.value)
    assert cli.invoke(app, ["encode", str(songs_run.path), "--modalities", "metadata"]).exit_code == 0
    assert (songs_run.model_dir / "tracks.pt").read_bytes() == before  # no retraining
    assert len(Engine.load(songs_run.path).music.track_ids) == len(SONGS) + len(rows)  # not stale
    with live_server_factory(songs_run.path, "--reply-tokens", "4") as url:
        for i, (title, artist) in enumerate(ADDED):
            query = {"query": f"play {title} by {artist}", "k": 10}
            r = httpx.post(url + "/v1/recommend", json=query, timeout=60)
            assert r.status_code == 200, r.text
            assert f"new{i}" in [t["id"] for t in r.json()["tracks"]], (title, r.json()["tracks"])
        n = len(SONGS) + len(rows)
        r = httpx.post(url + "/v1/recommend", json={"query": "music by the Eagles", "k": n}, timeout=60)
        got = {t["id"]: t for t in r.json()["tracks"]}
        # one song under two ids: offered once, the other id after every other track, though
        # the cold twin's row (the same metadata) scores it right after s3's
        kept, again = sorted([got["twin"], got["s3"]], key=lambda t: t["rank"])
        assert again["rank"] == n
        assert again["score"] >= max(t["score"] for t in got.values() if kept["rank"] < t["rank"] < n)


def test_encoding_with_another_text_model_after_training_needs_force(songs_run):
    from typer.testing import CliRunner

    from talkplay.cli import app

    before = run_files(songs_run.embeddings_dir)
    res = CliRunner().invoke(app, ["encode", str(songs_run.path), "--modalities", "metadata",
                                   "--text-model", "some/other-model"])
    assert isinstance(res.exception, StaleArtifactError)
    assert "all-MiniLM-L6-v2" in str(res.exception) and "--force" in str(res.exception)
    assert run_files(songs_run.embeddings_dir) == before


def test_vllm_export_has_one_vocabulary_row_per_track_and_ranks_like_the_engine(synth_content, tmp_path):
    """The exported folder is a plain causal LM: fed the engine's prompt embeddings, its logits
    over the track tokens order the catalog as the engine's track head does."""
    from transformers import AutoModelForCausalLM

    from talkplay.vllm_support import (
        XARG_EXCLUDE,
        XARG_IN_BLOCK,
        ConstraintSpec,
        export_for_vllm,
        request_constraint,
    )

    run, _ = synth_content
    info = export_for_vllm(run, tmp_path / "vllm")
    engine = Engine.load(run.path)
    spec = ConstraintSpec.load(tmp_path / "vllm")
    ids = engine.music.track_ids
    assert info["tracks"] == len(spec.tracks) == len(ids) and info["prompt_embeds"]
    assert all(len(spec.tracks[t]) == 1 for t in ids)
    lm = AutoModelForCausalLM.from_pretrained(tmp_path / "vllm").eval()
    assert not lm.config.tie_word_embeddings
    token = torch.tensor([spec.tracks[t][0] for t in ids])
    for conv, _ in held_out_turns(run)[:6]:
        with torch.no_grad():
            logits = lm(inputs_embeds=engine.prompt_embeds(conv)[None]).logits[0, -1]
        seen = {t for turn in conv.turns for t in (*turn.recommended, *turn.liked, *turn.disliked)}
        ranked = torch.argsort(logits[token], descending=True).tolist()
        exported = [ids[i] for i in ranked if ids[i] not in seen][:5]
        best = [r.track_id for r in engine.recommend(conv, k=5)]
        assert exported == best
        # the served rule: the prompt ends inside a block, so the first token is a track, never a seen one
        args = {XARG_IN_BLOCK: "true", XARG_EXCLUDE: json.dumps(sorted(seen))}
        rule = request_constraint(spec.music_vocab(), args)
        first = int(torch.argmax(rule([], logits.clone())))
        assert spec.tracks_in_text(f"<|music|>{lm_token(spec, first)}<|/music|>") == [best[0]]
        assert int(torch.argmax(rule([first], logits.clone()))) == spec.music_close


def lm_token(spec, token_id: int) -> str:  # noqa: ANN001
    return next(name for name, i in spec.vocab.items() if i == token_id)


def test_sampled_softmax_past_the_full_softmax_limit(tmp_path):
    """Past ``full_softmax_max`` tracks a step scores its own tracks plus random negatives."""
    from talkplay.dialogs import RenderConfig, load_dialogs
    from talkplay.tracks.data import Example, collate, request_key
    from talkplay.tracks.features import TrackSlots
    from talkplay.tracks.train import build_model

    run = build_synth_run(tmp_path / "run", n_train=48)
    feats = TrackFeatures.from_run(run)
    model, tok, _ = build_model(run, TrainConfig(**TINY), feats)
    slots = TrackSlots(feats.ids)
    convs = [c for c in load_dialogs(run, "train") if not c.extra.get("alignment") and len(c.turns) > 1][:4]
    exs = [Example.build(c, tok, slots, RenderConfig(max_length=128)) for c in convs]
    keys = list(dict.fromkeys(request_key(o) for e in exs for o in e.opens))
    batch = collate(exs, tok.pad_token_id, {k: i for i, k in enumerate(keys)})
    assert len(batch["ctx_open"]) > 0  # later turns read the tracks before them
    queries = torch.randn(len(keys), model.net.request_dim)
    full = model(**batch, queries=queries)
    model.full_softmax_max, model.negatives = 4, 3
    sampled = model(**batch, queries=queries)
    assert torch.isfinite(sampled["loss"]) and sampled["track_loss"] < full["track_loss"]  # fewer rivals
    sampled["loss"].backward()
    assert model.net.proj["tags"].weight.grad is not None


def test_every_turn_trains_the_turns_a_long_conversation_drops(tmp_path):
    """``--every-turn``: where ``--max-length`` drops a conversation's oldest turns, they come
    back as examples of the conversation up to where they end, so each turn's tracks are
    targets exactly once; without it they are never targets."""
    import dataclasses

    from talkplay.dialogs import RenderConfig, load_dialogs
    from talkplay.tracks.data import Example
    from talkplay.tracks.features import TrackSlots
    from talkplay.tracks.train import build_model

    run = build_synth_run(tmp_path / "run", n_train=48)
    feats = TrackFeatures.from_run(run)
    _, tok, _ = build_model(run, TrainConfig(**TINY), feats)
    slots = TrackSlots(feats.ids)
    base = next(c for c in load_dialogs(run, "train") if len(c.turns) > 1)
    conv = dataclasses.replace(base, turns=[dataclasses.replace(base.turns[i % len(base.turns)])
                                            for i in range(6)])  # six turns: too long for 96 tokens
    cfg = RenderConfig(max_length=96)

    last = Example.build(conv, tok, slots, cfg)
    every = Example.build_every_turn(conv, tok, slots, cfg)
    assert len(every) > 1 and every[0].input_ids == last.input_ids  # the first is the usual one
    assert all(len(e.input_ids) <= 96 for e in every)
    per_turn = [slots.index[t] for t in conv.turns for t in t.recommended]
    assert sum(o.target >= 0 for e in every for o in e.opens) == len(per_turn)  # each turn once
    assert sum(o.target >= 0 for o in last.opens) < len(per_turn)  # the oldest were dropped
    assert sorted(o.target for e in every for o in e.opens if o.target >= 0) == sorted(per_turn)
    short = dataclasses.replace(conv, turns=conv.turns[:1])
    assert len(Example.build_every_turn(short, tok, slots, cfg)) == 1  # what fits stays one example


def test_recommender_contract_on_the_content_model(synth_content):
    from talkplay.engine import TalkPlayRecommender
    from talkplay.recommender import Recommender

    run, _ = synth_content
    rec = TalkPlayRecommender()
    assert isinstance(rec, Recommender)
    rec.fit(run)
    conv = Conversation(id="c", turns=[Turn(user="i want blues")])
    out = rec.recommend(conv, k=10, exclude={"t4"})
    assert len(out) == 10 and len({t for t, _ in out}) == 10 and "t4" not in {t for t, _ in out}
    scores = [s for _, s in out]
    assert scores == sorted(scores, reverse=True)
    full = rec.recommend(conv, k=100)  # k beyond the catalog gives every track once
    assert len(full) == len({t for t, _ in full}) == len(run.load_catalog(validate=False))


def test_a_song_under_two_ids_is_offered_once_and_not_again_after_it_was_played(synth_content):
    run, _ = synth_content
    ask = Conversation(id="c", turns=[Turn(user="i want blues")])
    first = Engine.load(run.path).recommend(ask, k=100)
    a, b = first[0].track_id, first[1].track_id
    engine = Engine.load(run.path)  # its catalog holds the best two as one song under two ids
    engine.catalog.get(b).title = engine.catalog.get(a).title.upper()
    engine.catalog.get(b).artists = list(engine.catalog.get(a).artists)
    ranked = [r.track_id for r in engine.recommend(ask, k=100)]
    assert ranked[0] == a and ranked[-1] == b  # the repeat only after every other song
    assert len(ranked) == len(first)  # a long list still holds every track
    played = Conversation(id="c", turns=[Turn(user="i want blues", recommended=[a], liked=[a]),
                                         Turn(user="more like that")])
    ranked = [r.track_id for r in engine.recommend(played, k=100)]
    assert a not in ranked and ranked[-1] == b  # liked as a, not offered again as b
    assert b not in [r.track_id for r in engine.recommend(played, k=5)]


def test_recommend_cli_on_the_content_model_and_beam_refused(synth_content):
    from typer.testing import CliRunner

    from talkplay.cli import app

    run, _ = synth_content
    res = CliRunner().invoke(app, ["recommend", str(run.path), "any tango tracks?", "--k", "3", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert [t["id"] for t in out["tracks"]][0] == "t3" and len(out["tracks"]) == 3
    assert out["reply"] and not RAW.search(out["reply"])
    res = CliRunner().invoke(app, ["recommend", str(run.path), "tango", "--method", "beam"])
    assert res.exit_code != 0 and "--method beam applies to codes models only" in str(res.exception)


def test_show_mask_on_a_content_run_shows_slots_and_cards_without_a_tokenizer(synth_content, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from talkplay.cli import app

    run, _ = synth_content
    copy = tmp_path / "run"  # a content run never tokenized
    shutil.copytree(run.path, copy, ignore=shutil.ignore_patterns("tokenizer", "checkpoints"))
    res = CliRunner().invoke(app, ["dialogs", str(copy), "--show-mask", "--json"])
    assert res.exit_code == 0, res.output
    ex = json.loads(res.stdout.strip().splitlines()[-1])["example"]
    assert ex["track_repr"] == "content" and ex["cards"] and ex["slots"] >= 2 and ex["ranked_opens"] >= 1
    kinds = [s["kind"] for s in ex["spans"]]
    assert "slot" in kinds and "open" in kinds
    text = "".join(s["text"] for s in ex["spans"])
    assert "<|track|>[t" in text and '"Song ' in text  # each slot names its track; its card follows
    assert not any(s["supervised"] for s in ex["spans"] if s["kind"] == "slot")  # rows are not text
    res = CliRunner().invoke(app, ["dialogs", str(copy), "--show-mask", "--track-repr", "codes"])
    assert res.exit_code != 0 and "talkplay tokenize" in str(res.exception)


def test_the_content_model_file_carries_its_constants(synth_content, tmp_path):
    from talkplay.tracks import network
    from talkplay.tracks.data import CONTEXT_DECAY
    from talkplay.tracks.meta import ContentMeta
    from talkplay.tracks.network import TrackNetConfig

    run, _ = synth_content
    saved = json.loads((run.model_dir / "tracks.json").read_text())
    assert (saved["gate_scale"], saved["gain_scale"], saved["context_decay"], saved["missing_init"],
            saved["quiet_row"]) == (network.GATE_SCALE, network.GAIN_SCALE, CONTEXT_DECAY,
                                    network.MISSING_INIT, network.QUIET_ROW)
    old = {k: v for k, v in saved.items() if k not in ("gate_scale", "gain_scale", "context_decay")}
    assert TrackNetConfig(**old) == TrackNetConfig(**saved)  # a model saved before reads today's values
    meta = ContentMeta.read(run.model_dir)
    assert meta.track_repr == "content" and meta.cards and meta.max_length == TINY["max_length"]
    # a saved decay is the one the engine uses, whatever today's default
    engine = Engine.load(run.path)
    conv = Conversation(id="c", turns=[Turn(user="play some jazz music", recommended=["t0"]),
                                       Turn(user="some reggae", recommended=["t1"]), Turn(user="more")])
    before = engine._requests(conv, [2])[0].context
    engine.content.net.cfg.context_decay = 0.25
    after = engine._requests(conv, [2])[0].context
    assert dict(before)[0] == CONTEXT_DECAY and dict(after)[0] == 0.25


def test_chat_with_a_content_model_likes_rejects_and_never_repeats(synth_content):
    import io

    from rich.console import Console

    from talkplay.engine.chat import chat_loop

    run, _ = synth_content
    engine = Engine.load(run.path)
    out = io.StringIO()
    lines = ["play some jazz music", "/like 1", "/reject 2", "now some tango", "more disco now", "/quit"]
    session = chat_loop(engine, lines, Console(file=out, width=120), k=2)
    text = out.getvalue()
    assert "16 tracks" in text and text.count("talkplay>") == 3 and not RAW.search(text)
    turns = session.conversation.turns
    ids = [t for turn in turns for t in turn.recommended]
    assert len(ids) == len(set(ids)) == 6 and turns[0].liked and turns[0].disliked
    assert turns[1].recommended[0] == "t3"  # tango, as the known answers say


def test_the_engine_reads_the_conversations_tracks_but_not_the_rejected_ones(synth_content):
    run, _ = synth_content
    engine = Engine.load(run.path)
    gate = engine.content.net.context_gate
    assert gate is not None  # on by default

    def last_input(first: Turn) -> torch.Tensor:
        conv = Conversation(id="c", turns=[first, Turn(user="more like that")])
        return engine.prompt_embeds(conv)[-1]

    def inputs() -> dict[str, torch.Tensor]:
        ask = "play some jazz music"
        return {"liked": last_input(Turn(user=ask, recommended=["t0"], liked=["t0"])),
                "rejected": last_input(Turn(user=ask, recommended=["t0"], disliked=["t0"])),
                "nothing": last_input(Turn(user=ask)),
                "other": last_input(Turn(user=ask, recommended=["t3"], liked=["t3"]))}

    with torch.no_grad():  # the trained gate, whatever it learnt, then held open, then shut
        trained = inputs()
        gate.weight.zero_()
        gate.bias.fill_(5.0)
        opened = inputs()
        gate.bias.fill_(-5.0)
        shut = inputs()
    # what the request adds to the <|music|> token's own embedding
    token = engine.content.lm.get_input_embeddings().weight[engine.open_id]
    request = float((opened["nothing"] - token).norm())

    def gap(x: dict[str, torch.Tensor], a: str, b: str) -> float:
        return float((x[a] - x[b]).norm()) / request

    for x in (trained, opened, shut):  # a rejected track is nothing to go on from (up to batching noise)
        assert gap(x, "rejected", "nothing") < 1e-3
    assert gap(opened, "liked", "nothing") > 0.2 and gap(opened, "liked", "other") > 0.1
    assert gap(shut, "liked", "nothing") < 0.05  # a turn that asks for something new
    assert gap(shut, "liked", "nothing") < gap(trained, "liked", "nothing") < gap(opened, "liked", "nothing")


def test_training_ranks_a_target_among_the_tracks_training_holds(tmp_path):
    """``--negatives seen`` (the default): the track loss ranks among the tracks of the training
    conversations, so a track only held-out conversations hold is never learnt as worse."""
    from talkplay.conversations import write_conversations
    from talkplay.dialogs import load_dialogs
    from talkplay.tracks.train import prepare

    run = build_synth_run(tmp_path / "run", n_train=24)
    # hold track t0 out of training: only held-out conversations would hold it
    train = [c for c in load_dialogs(run, "train")
             if not any("t0" in (*t.recommended, *t.liked, *t.disliked) for t in c.turns)]
    write_conversations(run.dialogs_dir / "train.jsonl", train)
    s = prepare(run, TrainConfig(**TINY, max_steps=1))
    cand = {s.feats.ids[i] for i in s.model.candidates.tolist()}
    assert "t0" not in cand and cand == set(s.feats.ids) - {"t0"}
    assert prepare(run, TrainConfig(**TINY, max_steps=1, negatives="catalog")).model.candidates is None
    # the loss over every row is the loss with every row a candidate; fewer rivals, lower loss
    from talkplay.tracks.data import collate
    batch = collate(s.examples[:4], s.tok.pad_token_id, s.query_index)
    model = s.model
    with torch.no_grad():
        torch.manual_seed(0)
        narrow = model(**batch, queries=s.queries)["track_loss"]
        model.set_candidates(torch.arange(model.n_tracks))
        torch.manual_seed(0)
        every = model(**batch, queries=s.queries)["track_loss"]
        model.set_candidates(None)
        torch.manual_seed(0)
        catalog = model(**batch, queries=s.queries)["track_loss"]
    assert torch.isclose(every, catalog) and narrow < catalog


def test_the_conversations_tracks_so_far_are_not_rivals_of_the_target(tmp_path):
    """The engine never offers a conversation's earlier tracks again, so training ranks each
    target without them: with every score equal, the loss at a ``<|music|>`` is the log of the
    number of candidates left once the earlier tracks are set aside."""
    import math

    from talkplay.tracks.data import collate
    from talkplay.tracks.train import prepare

    run = build_synth_run(tmp_path / "run", n_train=24)
    s = prepare(run, TrainConfig(**TINY, max_steps=1, negatives="catalog"))
    picked = [e for e in s.examples if len(e.slots) > 1][:4]
    batch = collate(picked, s.tok.pad_token_id, s.query_index)
    s.model.track_scores = lambda hidden, rows: torch.zeros(len(hidden), len(rows))
    with torch.no_grad():
        loss = s.model(**batch, queries=s.queries, text_weight=0.0)["track_loss"]
    expect = []
    for e in picked:
        for o in e.opens:
            if o.target >= 0:
                earlier = {r for p, r in e.slots if p < o.position} - {o.target}
                expect.append(math.log(s.model.n_tracks - len(earlier)))
    assert any(math.log(s.model.n_tracks) > x for x in expect)  # some target has earlier tracks
    assert float(loss) == pytest.approx(sum(expect) / len(expect), rel=1e-5)


def test_the_playlist_to_come_is_a_target_beside_the_turns_own_track(tmp_path):
    """``--goal-weight``: each ``<|music|>`` also learns the conversation's other liked tracks
    not yet written (CPCD judges a turn by the whole playlist to come), never an earlier one."""
    import math

    from talkplay.conversations import write_conversations
    from talkplay.dialogs import load_dialogs
    from talkplay.tracks.data import collate
    from talkplay.tracks.train import prepare

    run = build_synth_run(tmp_path / "run", n_train=24)
    convs = load_dialogs(run, "train")
    for c in convs:  # the playlist each conversation builds, as CPCD records it
        c.goal = [t for turn in c.turns for t in turn.liked]
    convs[0].goal = []  # a conversation without one learns its turns' own tracks alone
    write_conversations(run.dialogs_dir / "train.jsonl", convs)
    s = prepare(run, TrainConfig(**TINY, max_steps=1, negatives="catalog"))
    assert not any(o.goal for o in s.examples[0].opens)
    single = sum(len(c.turns) == 1 for c in convs)
    assert single and sum(not any(o.goal for o in e.opens) for e in s.examples) >= single  # nothing to come
    picked = [e for e in s.examples if any(o.goal for o in e.opens)][:4]
    assert picked, "multi-turn conversations have a playlist to come"
    for e in picked:
        for o in e.opens:
            earlier = {r for p, r in e.slots if p < o.position}
            assert o.target not in o.goal and not set(o.goal) & earlier
    batch = collate(picked, s.tok.pad_token_id, s.query_index)
    s.model.track_scores = lambda hidden, rows: torch.zeros(len(hidden), len(rows))
    with torch.no_grad():
        out = s.model(**batch, queries=s.queries, text_weight=0.0, goal_weight=0.5)
    expect = [math.log(s.model.n_tracks - len({r for p, r in e.slots if p < o.position} - {o.target}))
              for e in picked for o in e.opens if o.target >= 0 for _ in o.goal]
    assert float(out["goal_loss"]) == pytest.approx(sum(expect) / len(expect), rel=1e-5)
    assert float(out["loss"]) == pytest.approx(float(out["track_loss"] + 0.5 * out["goal_loss"]), rel=1e-5)


def test_a_track_the_user_turned_down_counts_more_among_the_wrong_answers(tmp_path):
    """``--disliked-weight``: the tracks a turn's user rejected (written in the answer, never a
    target) weigh that many times in the softmax of the turn's targets; other turns' do not."""
    import math

    from talkplay.conversations import write_conversations
    from talkplay.dialogs import load_dialogs
    from talkplay.tracks.data import collate
    from talkplay.tracks.train import prepare

    run = build_synth_run(tmp_path / "run", n_train=24)
    convs = load_dialogs(run, "train")
    multi = [c for c in convs if len(c.turns) > 1][:3]
    assert multi
    for n, c in enumerate(multi):  # the first turn's answer also offered a track the user turned down
        first = c.turns[0]
        taken = {t for turn in c.turns for t in [*turn.recommended, *turn.liked]}
        bad = next(f"t{i}" for i in range(n, 99) if f"t{i}" not in taken)
        first.recommended = [*first.recommended, bad]
        first.disliked = [bad]
    write_conversations(run.dialogs_dir / "train.jsonl", convs)
    s = prepare(run, TrainConfig(**TINY, max_steps=1, negatives="catalog", disliked_weight=3.0))
    index = {t: i for i, t in enumerate(s.model.features.ids)}
    picked = [e for e in s.examples if any(o.avoid for o in e.opens)]
    assert len(picked) == len(multi)  # exactly the conversations given one
    for e, c in zip(picked, multi, strict=True):
        targets = [o for o in e.opens if o.target >= 0]
        assert [len(o.avoid) for o in targets] == [1] + [0] * (len(targets) - 1)  # its own turn only
        assert all(not o.avoid for o in e.opens if o.target < 0)  # the rejected track's own slot
        assert targets[0].avoid == [index[c.turns[0].disliked[0]]]
    batch = collate(picked, s.tok.pad_token_id, s.query_index)
    assert len(batch["avoid_row"]) == len(multi)
    s.model.track_scores = lambda hidden, rows: torch.zeros(len(hidden), len(rows))
    losses = {}
    for w in (1.0, 3.0):
        with torch.no_grad():
            losses[w] = float(s.model(**batch, queries=s.queries, text_weight=0.0, goal_weight=0.0,
                                      disliked_weight=w)["track_loss"])
    expect = []  # all scores 0: log of the open's candidates, a rejected one counting 3 times
    for e in picked:
        for o in e.opens:
            if o.target >= 0:
                earlier = {r for p, r in e.slots if p < o.position} - {o.target}
                expect.append(math.log(s.model.n_tracks - len(earlier) + 2 * len(set(o.avoid) - earlier)))
    assert losses[3.0] > losses[1.0]
    assert losses[3.0] == pytest.approx(sum(expect) / len(expect), rel=1e-5)
    s.model.full_softmax_max, s.model.negatives = 4, 3  # sampled: the rejected tracks join the rivals
    for w in (1.0, 3.0):
        torch.manual_seed(0)
        with torch.no_grad():
            out = s.model(**batch, queries=s.queries, text_weight=0.0, disliked_weight=w)
        losses[w] = float(out["track_loss"])
    assert losses[3.0] > losses[1.0]
