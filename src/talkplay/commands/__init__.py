"""Subcommand modules; each has ``register(app)``. The CLI registers them in this order."""

from talkplay.commands import (
    catalog,
    chat,
    demo,
    dialogs,
    encode,
    evaluate,
    importing,
    recommend,
    serve,
    tokenize,
    train,
)

COMMANDS = [importing, catalog, encode, tokenize, dialogs, train, recommend, chat, serve, evaluate, demo]
