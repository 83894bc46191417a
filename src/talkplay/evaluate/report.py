"""Reports of an ``evaluate_run`` result: a side-by-side table (terminal, Markdown, JSON)
and two plots (hit@10 per turn per system, hit@k curves).

``write_report(run.eval_dir, result)`` writes ``<name>.json``, ``<name>.md``,
``<name>.hit10_per_turn.png``, ``<name>.hit_at_k.png`` and, when a system wrote replies,
``<name>-replies.md`` (each reply beside the human's); ``rich_table(result)`` is what
``talkplay eval`` prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from talkplay.atomic import write_atomic, write_json_atomic, write_text_atomic
from talkplay.evaluate.metrics import K_VALUES

MAIN_METRICS = ("hit@1", "hit@10", "hit@100", "mrr@100", "recall@100", "ndcg@10")
CPCD_ATTRIBUTION = ("CPCD: Chaganty et al., \"Beyond Single Items: Exploring User Preferences in Item "
                    "Sets with the Conversational Playlist Curation Dataset\", SIGIR 2023; "
                    "data licensed CC BY 4.0.")

# what each reference row (not a system) means, printed under the tables that show it
REFERENCE_NOTES = {
    "leak-probe": "The leak-probe row is not a system: it ranks tracks absent from all training data first, "
                  "in random order, to show how much a score could owe to that signal.",
    "ceiling": "The ceiling row is not a system: each synthesized turn's gold was drawn uniformly from the "
               "tracks that fit its request equally well, so the best any ranking can expect is those tracks "
               "first, in any order (hit@k = min(1, k / candidates)).",
}


def _cell(agg: dict[str, Any], metric: str, average: str, ci: bool) -> str:
    value = agg.get(average, {}).get(metric)
    if value is None:
        return "–"
    if not ci or metric not in agg.get("ci", {}).get(average, {}):
        return f"{value:.3f}"
    lo, hi = agg["ci"][average][metric]
    return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


def table_rows(result: dict[str, Any], metrics: tuple[str, ...] = MAIN_METRICS, average: str = "macro",
               part: str = "all", ci: bool = True, timing: bool = True) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the side-by-side table; reference rows (leak probe, ceiling) are
    labelled as not systems."""
    header = ["system", "turns", *metrics] + (["fit s", "predict s"] if timing else [])
    rows = []
    for name, s in result["systems"].items():
        agg = s[part]
        label = name if s.get("is_system", True) else f"{name} (not a system)"
        row = [label, str(agg.get("n_turns", 0)), *[_cell(agg, m, average, ci) for m in metrics]]
        if timing:
            row += [f"{s['fit_seconds']:.1f}", f"{s['predict_seconds']:.1f}"]
        rows.append(row)
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def rich_table(result: dict[str, Any], average: str = "macro", part: str = "all") -> Table:
    """The terminal table: every system side by side, macro values with 95% CIs
    (``part="cold"``: gold restricted to tracks never seen in training conversations)."""
    conv = result["conversations"]
    what = "cold gold only, " if part == "cold" else ""
    title = (f"{result['protocol']} on {conv['n']} conversations / {conv['n_turns']} turns "
             f"({what}{average}, 95% bootstrap CI)")
    header, rows = table_rows(result, average=average, part=part, timing=part == "all")
    notes = [note for name, note in REFERENCE_NOTES.items() if name in result["systems"]]
    return _table(title, header, rows, caption="\n".join(notes) or None)


def _table(title: str, header: list[str], rows: list[list[str]], caption: str | None = None) -> Table:
    """A terminal table: the first column left-aligned, the numbers right-aligned."""
    table = Table(title=title, caption=caption)
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*r)
    return table


REPLY_METRICS = (("reply_faithfulness", "faithful"), ("reply_faithfulness_unguarded", "faithful unguarded"),
                 ("distinct_2", "distinct-2"), ("repeated_trigram_rate", "repeats 3-gram"),
                 ("cut_off_rate", "cut off"), ("request_mention", "mentions request"),
                 ("artist_grounding", "names asked artist"), ("fluency", "NLL"),
                 ("fluency_human", "NLL human"))


def _reply_cell(s: dict[str, Any], key: str) -> str:
    if s.get(key) is None:
        return "–"
    if key == "artist_grounding":  # a share of few requests: say how few
        return f"{s[key]:.3f} ({s.get('requests_naming_card_artist', 0)})"
    return f"{s[key]:.3f}"


def reply_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the replies table (systems that write replies only)."""
    header = ["system", "replies", *[label for _, label in REPLY_METRICS]]
    rows = []
    for name, s in result["systems"].items():
        if s.get("n_replies"):
            rows.append([name, str(s["n_replies"]), *[_reply_cell(s, k) for k, _ in REPLY_METRICS]])
            human = s.get("human")  # the curators' replies to the same turns, for scale
            if human:
                human = {**human, "fluency": s.get("fluency_human")}
                cells = [_reply_cell(human, k) if k in human else "–" for k, _ in REPLY_METRICS]
                rows.append(["human replies (not a system)", str(human["n_replies"]), *cells])
    return header, rows


def rich_reply_table(result: dict[str, Any]) -> Table | None:
    """The replies table for the terminal, or None when no system wrote replies."""
    header, rows = reply_rows(result)
    if not rows:
        return None
    title = ("Replies: faithful = names only tracks recommended so far (and their artists); "
             "unguarded = the same, written without the engine's guard")
    return _table(title, header, rows, caption=REPLY_NOTE)


REPLY_NOTE = ("distinct-2: distinct word bigrams / all bigrams; repeats 3-gram: replies repeating a word "
              "trigram; cut off: replies empty or stopping mid-sentence; mentions request: replies naming a "
              "tag or artist the request named, among requests that named one; names asked artist: replies "
              "naming the artist the request asked for when a card is by that artist (how many such "
              "requests in brackets); NLL: mean nats per reply token under the untuned base model given "
              "the request (lower reads more fluently), of the replies and of the human replies.")


def md_cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell: ``|`` escaped, line breaks as ``<br>``."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r\n", "<br>").replace("\n", "<br>")


def replies_markdown(result: dict[str, Any]) -> str | None:
    """Every checked reply beside the human's for the same turn, as Markdown (None: no replies)."""
    parts = []
    for name, s in result["systems"].items():
        if not s.get("replies"):
            continue
        header = ["turn", "request", "cards", "reply", "human reply", "flags"]
        rows = []
        for r in s["replies"]:
            flags = ["cut off"] * bool(r.get("cut_off")) + ["repeats"] * bool(r.get("repeats_trigram"))
            flags += [f"unfaithful: {', '.join(r['unfaithful'])}"] * bool(r.get("unfaithful"))
            rows.append([md_cell(f"{r['conversation']}:{r['turn']}"), md_cell(r["request"]),
                         "<br>".join(md_cell(c) for c in r["cards"]),
                         md_cell(r["reply"]), md_cell(r.get("human_reply") or ""), md_cell("; ".join(flags))])
        parts += [f"## {name}", "", markdown_table(header, rows), ""]
    if not parts:
        return None
    return "\n".join([f"# Replies: {result['name']}", "", "The last scored turn of each conversation: the "
                      "request, the three tracks answered, the model's reply and the human's reply to the "
                      "same request (blank where the conversation has none).", "", *parts])


def per_turn_markdown(result: dict[str, Any], metric: str = "hit@10") -> str:
    turns: list[Any] = []
    for s in result["systems"].values():
        for e in s["all"]["per_turn"]:
            if e["turn"] not in turns:
                turns.append(e["turn"])
    header = ["system", *[f"turn {t}" for t in turns]]
    rows = []
    for name, s in result["systems"].items():
        by = {e["turn"]: e for e in s["all"]["per_turn"]}
        rows.append([name, *[f"{by[t][metric]:.3f}" if t in by else "–" for t in turns]])
    counts = next(iter(result["systems"].values()))["all"]["per_turn"]
    rows.append(["(turns scored)", *[str({e["turn"]: e["n"] for e in counts}.get(t, 0)) for t in turns]])
    return markdown_table(header, rows)


def kind_rows(result: dict[str, Any], metric: str = "hit@10") -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-request-kind table (empty rows when turns have no kinds)."""
    kinds = sorted({k for s in result["systems"].values() for k in s.get("by_kind", {})})
    if not kinds:
        return [], []
    first = next(s["by_kind"] for s in result["systems"].values() if s.get("by_kind"))
    header = ["system", *[f"{k} ({first.get(k, {}).get('n_turns', 0)})" for k in kinds]]
    rows = [[name, *[f"{s['by_kind'][k][metric]:.3f}" if k in s["by_kind"] else "–" for k in kinds]]
            for name, s in result["systems"].items() if s.get("by_kind")]
    return header, rows


def turn_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-turn-kind table (``talkplay.evaluate.turns``): hit@10 and
    mrr@100 on turns naming music, openings and follow-ups naming none."""
    from talkplay.evaluate.turns import TURN_KINDS

    with_turns = {n: s for n, s in result["systems"].items() if s.get("by_turn")}
    if not with_turns:
        return [], []
    first = next(iter(with_turns.values()))["by_turn"]
    kinds = [k for k in TURN_KINDS if k in first]
    header = ["system", *[f"{k} ({first[k]['n_turns']}) {m}" for k in kinds for m in ("hit@10", "mrr@100")]]
    rows = [[name, *[f"{s['by_turn'][k][m]:.3f}" if k in s["by_turn"] else "–"
                     for k in kinds for m in ("hit@10", "mrr@100")]] for name, s in with_turns.items()]
    return header, rows


def probe_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the follow-up probe's table (``talkplay.evaluate.probe``)."""
    probed = {n: s["follow_ups"] for n, s in result["systems"].items() if s.get("follow_ups", {}).get("n")}
    if not probed:
        return [], []
    from talkplay.evaluate.probe import CHIT_CHAT

    def with_without(p: dict[str, Any], metric: str) -> str:
        return f"{p['with_follow_up'][metric]:.3f} / {p['without'][metric]:.3f}" if p else "–"

    header = ["system", "echo rate", "go on hit@10", "go on mrr@100", "hit@10 with / without",
              "mrr@100 with / without", "chit-chat: hit@10 with / without",
              "chit-chat: mrr@100 with / without"]
    rows = []
    for name, p in probed.items():
        chat = p.get("by_kind", {}).get(CHIT_CHAT, {})
        rows.append([name, f"{p['echo_rate']:.3f}", f"{p['go_on']['hit@10']:.3f}",
                     f"{p['go_on']['mrr@100']:.3f}",
                     with_without(p, "hit@10"), with_without(p, "mrr@100"),
                     with_without(chat, "hit@10"), with_without(chat, "mrr@100")])
    return header, rows


PROBE_NOTE = ("Generic follow-ups ('Thank you!', 'Yes, a couple more.', 'Something different now, please.') "
              "after held-out turns. echo rate: share of the top 10, after a follow-up alone that names no "
              "music, whose title or artists share a content word with it (a curator's is 0); go on: that "
              "top 10 scored against what the curator brought next; with / without: the real request with "
              "the follow-up before it, against the same turns without it; chit-chat: the follow-ups that "
              "neither name an artist nor ask for a change, the two kinds that change the request.")


def rich_slices_tables(result: dict[str, Any]) -> list[Table]:
    """The per-turn-kind and follow-up probe tables for the terminal (those that apply)."""
    out = []
    header, rows = turn_rows(result)
    if rows:
        out.append(_table("By turn: the request names a catalog artist or title, opens the conversation "
                          "naming none, or follows up naming none (turns in brackets; micro)", header, rows))
    header, rows = probe_rows(result)
    if rows:
        n = next(s["follow_ups"] for s in result["systems"].values() if s.get("follow_ups", {}).get("n"))
        out.append(_table(f"Follow-up probe ({n['n']} turns, {n['n_echo']} naming no music)", header, rows,
                          caption=PROBE_NOTE))
    return out


def markdown_report(result: dict[str, Any]) -> str:
    """The whole report as Markdown: main, micro, cold and warm tables and the per-turn view."""
    conv, cat = result["conversations"], result["catalog"]
    parts = [
        f"# Evaluation: {result['name']}",
        "",
        f"- run: `{result['run']}`",
        f"- protocol: `{result['protocol']}`" + (" (ranking restricted to each session's pool)"
                                                   if result.get("pool") else ""),
        f"- conversations: {conv['n']} from `{conv['source']}`, {conv['n_turns']} scored turns; "
        f"systems fit on {conv['n_train']} training conversations",
        f"- catalog: {cat['n_tracks']} tracks, {cat['cold_tracks']} never in training conversations",
        "",
        "## Macro average (mean over conversations of the per-conversation mean), 95% bootstrap CI",
        "",
        markdown_table(*table_rows(result)),
        "",
        "## Micro average (mean over turns)",
        "",
        markdown_table(*table_rows(result, average="micro", timing=False)),
        "",
        f"## Cold: {result['cold_definition']} (macro)",
        "",
        markdown_table(*table_rows(result, part="cold", timing=False)),
        "",
        "## Warm: gold restricted to tracks seen in training conversations (macro)",
        "",
        markdown_table(*table_rows(result, part="warm", timing=False)),
        "",
        "## hit@10 per turn (micro within each turn index)",
        "",
        per_turn_markdown(result),
        "",
    ]
    header, rows = kind_rows(result)
    if rows:
        parts += ["## hit@10 by request kind (micro; turns scored in brackets)", "",
                  markdown_table(header, rows), ""]
    header, rows = turn_rows(result)
    if rows:
        parts += ["## By turn: names a catalog artist or title, opening or follow-up naming none (micro; "
                  "turns in brackets)", "", markdown_table(header, rows), ""]
    header, rows = probe_rows(result)
    if rows:
        parts += ["## Follow-up probe", "", PROBE_NOTE, "", markdown_table(header, rows), ""]
    header, rows = reply_rows(result)
    if rows:
        parts += ["## Replies (last scored turn of each conversation)", "",
                  "faithful: every catalog title the reply names is a track recommended so far, every "
                  "artist it names an artist of one (unguarded: the same replies written without the "
                  "engine's guard); " + REPLY_NOTE, "", markdown_table(header, rows), ""]
        parts += [f"Every reply beside the human's: `{result['name']}-replies.md`.", ""]
    for name, note in REFERENCE_NOTES.items():
        if name in result["systems"]:
            parts += [note, ""]
    if result["protocol"] == "cpcd" or "cpcd" in str(conv["source"]).lower():
        parts += [CPCD_ATTRIBUTION, ""]
    return "\n".join(parts)


def plot_per_turn(result: dict[str, Any], path: Path, metric: str = "hit@10") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, s in result["systems"].items():
        pts = [(e["turn"], e[metric]) for e in s["all"]["per_turn"] if isinstance(e["turn"], int)]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name,
                    linestyle="-" if s.get("is_system", True) else ":")
    first = next(iter(result["systems"].values()))["all"]["per_turn"]
    counts = [(e["turn"], e["n"]) for e in first if isinstance(e["turn"], int)]
    if counts:  # late turns are few; show how many each point averages
        ax.set_xticks([t for t, _ in counts], [f"{t}\n(n={n})" for t, n in counts], fontsize=8)
    ax.set_xlabel("turn index (scored turns)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per turn — {result['name']}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save_fig(fig, path)
    plt.close(fig)
    return path


def plot_hit_curves(result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, s in result["systems"].items():
        macro = s["all"]["macro"]
        ks = [k for k in K_VALUES if f"hit@{k}" in macro]
        ax.plot(ks, [macro[f"hit@{k}"] for k in ks], marker="o", label=name,
                linestyle="-" if s.get("is_system", True) else ":")
    ax.set_xscale("log")
    ax.set_xticks(list(K_VALUES), [str(k) for k in K_VALUES])
    ax.set_xlabel("k")
    ax.set_ylabel("hit@k (macro)")
    ax.set_title(f"hit@k — {result['name']}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save_fig(fig, path)
    plt.close(fig)
    return path


def _save_fig(fig: Any, path: Path) -> None:
    write_atomic(path, lambda p: fig.savefig(p, format="png", dpi=110), suffix=".png")


def write_report(eval_dir: Path, result: dict[str, Any], plots: bool = True) -> dict[str, str]:
    """Write JSON, Markdown and (optionally) plots for ``result``; returns their paths."""
    eval_dir = Path(eval_dir)
    name = result["name"]
    files = {"json": str(eval_dir / f"{name}.json"), "markdown": str(eval_dir / f"{name}.md")}
    side_by_side = replies_markdown(result)
    if side_by_side is not None:
        files["replies"] = str(eval_dir / f"{name}-replies.md")
        write_text_atomic(files["replies"], side_by_side)
    if plots:
        files["plot_per_turn"] = str(plot_per_turn(result, eval_dir / f"{name}.hit10_per_turn.png"))
        files["plot_hit_at_k"] = str(plot_hit_curves(result, eval_dir / f"{name}.hit_at_k.png"))
    write_text_atomic(files["markdown"], markdown_report(result))
    write_json_atomic(files["json"], {**result, "files": {**result.get("files", {}), **files}})
    return files
