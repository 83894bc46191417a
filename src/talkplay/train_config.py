"""What ``talkplay train`` does, declared once: ``TrainConfig`` (the CLI reads its defaults here).

Kept apart from ``talkplay.train`` so the command line can show the defaults without
importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from talkplay.errors import TalkPlayError

TRACK_REPRS = ("content", "codes")
# Fields only one representation's trainer reads, by why the other has no use for them. Set
# on a run of the other representation they would be dropped without a word, so ``validate``
# refuses them (``only_for``).
NEGATIVES = ("seen", "catalog")
ONLY_FOR = {
    "codes": {"the content trainer steps once per batch": "grad_accum",
              "the content trainer runs in float32 and keeps its activations": "bf16 gradient_checkpointing",
              "the content trainer has its own text loss": "supervised_logits"},
    "content": {"a codes model has no track network":
                "exit_layer inject_gain net_lr words_gain context current current_gate words_gate own_words "
                "word_weights "
                "negatives goal_weight disliked_weight every_turn",
                "a codes model has one loss": "text_weight text_every",
                "a codes model's tracks are its tokenizer's codes": "modalities modality_dropout words",
                "the codes trainer renders no cards": "cards cards_history"},
}
# the flag that moves a switch off its default, where it is not --field-name
OFF_FLAGS = {"supervised_logits": "--all-logits", "words": "--no-words", "words_gate": "--no-words-gate",
             "word_weights": "--no-word-weights",
             "current_gate": "--no-current-gate",
             "cards": "--no-cards",
             "cards_history": "--cards-latest"}


def only_for(track_repr: str) -> dict[str, tuple[str, str]]:
    """``{field: (flag, why)}`` of the fields only ``track_repr``'s trainer reads (``ONLY_FOR``)."""
    return {name: (OFF_FLAGS.get(name, "--" + name.replace("_", "-")), why)
            for why, names in ONLY_FOR[track_repr].items() for name in names.split()}


@dataclass
class TrainConfig:
    """What ``talkplay train`` does; each field is the flag of the same name.

    The defaults are the CPU recipe measured on CPCD (BENCHMARKS.md, "Content-grounded
    tracks" and "Replies that talk"): SmolLM2-135M, all 30 layers with the track head
    reading layer 8, LoRA, content-grounded tracks with cards, at most 30 minutes.
    ``max_steps`` > 0 overrides ``epochs``; ``keep_layers`` keeps only the first N
    transformer layers of the base (0 or None: all); ``lora`` trains low-rank adapters plus
    the new token rows instead of every weight; ``time_budget`` bounds training by wall time
    (the content trainer fits its schedule to it; the codes trainer stops there).
    """

    base_model: str = "smollm2-135m"
    init: str = "describe"
    lora: bool = True
    lora_rank: int = 16
    epochs: float = 3.0
    max_steps: int = -1
    lr: float = 1e-3
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 384  # tokens per conversation: room for the cards and the earlier turns
    save_every: int = 200
    resume: bool = False
    keep_layers: int | None = None  # 0 or None: all layers
    # content: the layer whose output the track head reads (0 or None: the last); replies read
    # every layer. 8 of SmolLM2-135M's 30 ranked best on CPCD, and a cut 8-layer LM (the old
    # --keep-layers 8) wrote looping, cut-off replies (BENCHMARKS.md, "Replies that talk")
    exit_layer: int | None = 8
    warmup_ratio: float = 0.03
    seed: int = 0
    threads: int | None = None
    log_every: int = 1
    bf16: bool = False  # mixed precision for large models on GPUs; brings nothing on AVX2 CPUs
    gradient_checkpointing: bool = False  # trade recompute for activation memory
    supervised_logits: bool = True  # LM head only where the loss mask is 1: same loss, less time and memory
    track_repr: str = "content"  # content: one row per track from its content; codes: k-means music tokens
    time_budget: float = 30.0  # minutes of training at most (0: none); the schedule fits the budget
    inject_gain: float = 4.0  # content: request embedding at <|music|>, x the LM's final residual norm
    text_weight: float = 1.0  # content: weight of the reply-text loss beside the track loss
    # content, with an early --exit-layer: the reply-text loss (and the layers past the exit) in
    # one step of this many; the others run the layers up to the exit alone, for the track
    # loss. Replies need the whole stack but few steps; ranking needs many (BENCHMARKS.md,
    # "Replies that talk")
    text_every: int = 4
    modalities: str | None = None  # content: comma-separated modalities of a track's row (None: all)
    modality_dropout: float = 0.5  # content: chance a non-text modality is hidden from a row in training
    # write each track's card (title, artist, facts) after it, replies after the cards: the reply
    # knows the names of what it recommends and can say them (BENCHMARKS.md, "Replies that talk")
    cards: bool = True
    # cards after the tracks of every answer, or (False) of the latest answer only, the one its
    # reply talks about (the window then keeps more earlier turns). On CPCD the latest only
    # ranked lower and learnt to end a reply at the cards (BENCHMARKS.md, "Replies that talk")
    cards_history: bool = True
    # content: a track's own words (title, artists, album, tags) as one more modality, and the
    # request's words beside its text embedding (talkplay.tracks.words)
    words: bool = True
    # content: the track network's learning rate as a fraction of --lr (talkplay.tracks.train); on
    # CPCD 1.0 undid most of what the untrained network ranks and 0.1 kept it under the old loss
    # (BENCHMARKS.md, "Context"); under the goal targets and seen negatives 0.3 ranked higher in
    # 5-fold CV and on the demo (BENCHMARKS.md, "The track network at 0.3")
    net_lr: float = 0.3
    # content: the request's words beside its text embedding at initialisation (1.0: best on CPCD
    # and, once trained, on the demo; BENCHMARKS.md, "Words" and "Context")
    words_gain: float = 1.0
    # content: the conversation's tracks so far beside the request at <|music|>, at this weight
    # (relative to the request) at initialisation; 0: none
    context: float = 1.0
    # content: the turn's own message beside the request (every user turn so far), at this weight
    # at initialisation, through a learnt gain; 0: none. CPCD: 0.5 best of 0-2; the demo, whose
    # requests name what they want turn by turn, uses 2 (BENCHMARKS.md, "Current turn")
    current: float = 0.5
    # content: the current gain read from the turn's own message (a learnt linear map of its
    # text embedding), not one gain for every message (talkplay.tracks.network). With the
    # chit-chat follow-ups to learn from it weighs "thank you!" a fifth of "add some Drake"; CPCD
    # 5-fold CV: BENCHMARKS.md, "The turn's own weight"
    current_gate: bool = True
    # content: the request's words weighed by what the turn's own message says (learnt), so
    # chit-chat's words can go quiet (talkplay.tracks.network); CPCD: BENCHMARKS.md, "Learning
    # beyond the start"
    words_gate: bool = True
    # content: the turn's own words taken out of (or added to) the request's words by a signed
    # weight read from its message (learnt), apart from the earlier turns' (talkplay.tracks.network).
    # Off: on CPCD it echoed less and ranked lower (BENCHMARKS.md, "Where the echo comes from")
    own_words: bool = False
    # content: each request word weighed by the square of how much more often than chance the
    # training turns whose message holds it were answered by tracks whose words hold it too
    # (talkplay.tracks.words.word_weights): the chit-chat words titles echo ("thank", "you") go
    # quiet, a named artist keeps its weight. CPCD 5-fold CV: BENCHMARKS.md, "Word weights
    # squared"
    word_weights: bool = True
    # content: what a training target is ranked against. seen: the tracks the training
    # conversations hold; catalog: every track, which teaches "never in training" as a reason to
    # rank a track low and costs cold tracks (BENCHMARKS.md, "Learning beyond the start")
    negatives: str = "seen"
    # content: weight of the conversation's playlist (its other liked tracks not yet written) as
    # targets beside each turn's own track: CPCD judges a turn by the whole playlist to come, and a
    # follow-up that names nothing is answered from it (0: the turn's own track only)
    goal_weight: float = 1.0
    # content: how many times a track the user turned down at a turn (CPCD's disliked results:
    # 2,163 over 694 turns, a curator's candidates that missed) counts among that turn's wrong
    # answers; 1: as any other track. On CPCD 350/50 4 ranked level with 1 (BENCHMARKS.md, "Each
    # song once"), so it stays off
    disliked_weight: float = 1.0
    # content: a conversation longer than --max-length also trains the turns it drops (the
    # oldest), as one more example that ends where they end (talkplay.tracks.data.Example.
    # build_every_turn); False: they are dropped
    every_turn: bool = False

    def validate(self) -> None:
        checks = [
            (self.lora_rank > 0, "--lora-rank must be positive"),
            (self.epochs > 0 or self.max_steps > 0, "--epochs must be positive"),
            (self.lr > 0, "--lr must be positive"),
            (self.batch_size > 0, "--batch-size must be positive"),
            (self.max_length >= 16, "--max-length must be at least 16"),
            (self.text_every > 0, "--text-every must be positive"),
            (self.save_every > 0, "--save-every must be positive"),
            (self.keep_layers is None or self.keep_layers >= 0, "--keep-layers must be 0 (all) or more"),
            (self.exit_layer is None or self.exit_layer >= 0, "--exit-layer must be 0 (the last) or more"),
            (self.init in ("mean_cov", "describe"), "--init must be mean_cov or describe"),
            (self.track_repr in TRACK_REPRS, f"--track-repr must be one of {', '.join(TRACK_REPRS)}"),
            (self.time_budget >= 0, "--time-budget must be 0 (none) or positive"),
            (0 <= self.modality_dropout < 1, "--modality-dropout must be in [0, 1)"),
            (self.net_lr >= 0, "--net-lr must be 0 (frozen) or positive"),
            (self.context >= 0, "--context must be 0 (none) or positive"),
            (self.current >= 0, "--current must be 0 (none) or positive"),
            (self.words_gain >= 0, "--words-gain must be 0 or positive"),
            (self.goal_weight >= 0, "--goal-weight must be 0 (none) or positive"),
            (self.disliked_weight > 0, "--disliked-weight must be positive (1: as any other track)"),
            (self.negatives in NEGATIVES, f"--negatives must be one of {', '.join(NEGATIVES)}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise TalkPlayError(msg)
        self.refuse_other_representations()

    def refuse_other_representations(self) -> None:
        """Raise ``TalkPlayError`` naming the first field set off its default that only the
        other representation's trainer reads (``ONLY_FOR``)."""
        defaults = {f.name: f.default for f in fields(self)}
        for repr_ in ONLY_FOR:
            if repr_ == self.track_repr:
                continue
            for name, (flag, why) in only_for(repr_).items():
                if getattr(self, name) != defaults[name]:
                    raise TalkPlayError(f"{flag} applies to --track-repr {repr_} only ({why}); "
                                        f"this run trains --track-repr {self.track_repr}")
