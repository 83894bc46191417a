"""Content-grounded tracks: every catalog track is one row computed from what the catalog
knows about it, used as its input embedding and as its row of the output head.

``feats = TrackFeatures.from_run(run)`` reads the run's modality embeddings;
``TrackNet`` turns them into rows and scores a hidden state against every row;
``ContentModel`` ties a causal LM to a ``TrackNet`` (``talkplay.tracks.model``);
``train_content(run, cfg)`` trains both end to end (``talkplay.tracks.train``).
"""

from talkplay.tracks.features import TrackFeatures, TrackSlots
from talkplay.tracks.network import TrackNet

__all__ = ["TrackFeatures", "TrackNet", "TrackSlots"]
