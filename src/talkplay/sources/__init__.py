"""Importers: files in, a ``Catalog`` out. See ``talkplay.sources.base``.

``get_importer(name).load(path, Issues())``; names: music21, cpcd, talkplaydata2, mpd, table.
"""

from talkplay.sources.base import (
    REGISTRY,
    ImportConfig,
    Importer,
    Issues,
    get_importer,
    import_into_run,
    import_tracks_into_run,
    source_names,
)

__all__ = ["REGISTRY", "ImportConfig", "Importer", "Issues", "get_importer", "import_into_run",
           "import_tracks_into_run", "source_names"]
