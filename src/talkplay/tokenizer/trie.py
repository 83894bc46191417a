"""A compact prefix trie over fixed-length code sequences, stored as flat numpy arrays.

Build with ``CodeTrie.build(codes)`` where ``codes`` is an ``(n_tracks, length)`` integer
array of per-position local codes (every row unique). ``trie.child(node, code)`` steps one
position, ``trie.children(node)`` lists the codes that may follow, and ``trie.row(node)``
gives the track row at a full sequence. ``IdTrie`` (from ``MusicTokenizer.trie_for``, or
``IdTrie.from_sequences({track_id: token_ids})`` for an exported constraint table) answers
the same questions in a language model's token ids.

Layout (why it is small): tracks are sorted lexicographically by code; a prefix shared by
two or more tracks is a *node* with a contiguous slice of outgoing edges (``edge_start``),
each edge holding its code and either a child node id (``>= 0``) or, when only one track
lies below, that track's position in sorted order encoded as ``-1 - pos``. Single-track
chains are not stored at all: their remaining codes are read from the code array through
``perm``. So memory is ``perm`` (4 B/track) plus 6 B per edge plus 4 B per shared prefix,
about 15-20 B per track for catalogs whose sequences diverge after two or three tokens.
Each step costs one bounded search among a node's children (at most log2 of the codebook
size, independent of the catalog size); ``IdTrie`` caches recently visited prefixes so
beam search pays a dictionary lookup per step.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np

ROOT = 0


class CodeTrie:
    """Prefix trie over rows of a code array: ``CodeTrie.build(codes)``; see module doc."""

    def __init__(self, codes: np.ndarray, perm: np.ndarray, edge_start: np.ndarray,
                 edge_code: np.ndarray, edge_child: np.ndarray, depth_start: np.ndarray) -> None:
        self.codes = codes  # (n, length) in catalog order; shared with the tokenizer
        self.perm = perm  # sorted position -> catalog row
        self.edge_start = edge_start  # node -> first edge; len = n_nodes + 1
        self.edge_code = edge_code
        self.edge_child = edge_child
        self.depth_start = depth_start  # first node id of each prefix length
        self.length = int(codes.shape[1])
        self._views()

    # -- construction ------------------------------------------------------------------
    @classmethod
    def build(cls, codes: np.ndarray) -> CodeTrie:
        """Build from an ``(n, length)`` code array whose rows are all distinct."""
        codes = np.ascontiguousarray(codes)
        n, length = codes.shape
        if n == 0:
            return cls(codes, np.zeros(0, np.int32), np.zeros(2, np.int32), np.zeros(0, np.uint16),
                       np.zeros(0, np.int32), np.array([0] + [1] * (length + 1), np.int64))
        perm = np.lexsort(codes.T[::-1]).astype(np.int32)  # column 0 is the primary key
        s = codes[perm]
        # first_diff[i]: first position where sorted row i+1 differs from row i
        neq = s[1:] != s[:-1]
        first_diff = np.where(neq.any(axis=1), neq.argmax(axis=1), length)
        del neq
        if n > 1 and int(first_diff.min()) >= length:
            raise ValueError("code sequences are not unique")

        def group_starts(depth: int) -> np.ndarray:
            # groups of rows sharing their first `depth` codes
            return np.concatenate([[0], np.flatnonzero(first_diff < depth) + 1]).astype(np.int64)

        node_counts = [1]
        edge_codes, edge_children, child_counts = [], [], []
        next_node_id = 1
        starts_d = np.zeros(1, np.int64)
        is_node_d = np.ones(1, bool)
        for depth in range(length):
            starts_c = group_starts(depth + 1)
            sizes_c = np.diff(np.append(starts_c, n))
            parent = np.searchsorted(starts_d, starts_c, side="right") - 1
            keep = is_node_d[parent]  # children of shared prefixes become edges
            cs = starts_c[keep]
            csz = sizes_c[keep]
            is_node_c = sizes_c >= 2
            child_is_node = csz >= 2
            child_ids = np.full(len(cs), 0, np.int64)
            n_new = int(child_is_node.sum())
            child_ids[child_is_node] = np.arange(next_node_id, next_node_id + n_new)
            child_ids[~child_is_node] = -1 - cs[~child_is_node]
            next_node_id += n_new
            edge_codes.append(s[cs, depth])
            edge_children.append(child_ids)
            # edges per parent node, in node order
            node_parent_index = np.cumsum(is_node_d) - 1  # group -> node index at depth
            counts = np.bincount(node_parent_index[parent[keep]], minlength=int(is_node_d.sum()))
            child_counts.append(counts)
            node_counts.append(n_new)
            starts_d, is_node_d = starts_c, is_node_c
        counts_all = np.concatenate(child_counts)
        edge_start = np.zeros(len(counts_all) + 1, np.int64)
        np.cumsum(counts_all, out=edge_start[1:])
        depth_start = np.concatenate([[0], np.cumsum(node_counts)]).astype(np.int64)
        return cls(codes, perm, edge_start.astype(np.int32 if edge_start[-1] < 2**31 else np.int64),
                   np.concatenate(edge_codes).astype(np.uint16),
                   np.concatenate(edge_children).astype(np.int32), depth_start)

    # -- queries ------------------------------------------------------------------------
    # memoryviews give Python ints at C speed without copying the arrays (numpy scalar
    # indexing costs ~100 ns a time; these ~30 ns), which keeps a step near a microsecond.
    def _views(self) -> None:
        self._es = memoryview(self.edge_start)
        self._ec = memoryview(self.edge_code)
        self._ech = memoryview(self.edge_child)
        self._perm = memoryview(self.perm)
        self._codes = memoryview(self.codes.reshape(-1))

    def children(self, node: int, depth: int) -> np.ndarray:
        """Codes that may follow the prefix ``node`` of length ``depth`` (a view or 1-array)."""
        if depth >= self.length:
            return self.edge_code[:0]
        if node >= 0:
            return self.edge_code[self.edge_start[node]:self.edge_start[node + 1]]
        row = self.perm[-1 - node]
        return self.codes[row, depth:depth + 1]

    def child(self, node: int, depth: int, code: int) -> int | None:
        """The node reached from ``node`` (prefix length ``depth``) by ``code``, or None."""
        if depth >= self.length:
            return None
        if node < 0:
            return node if self._codes[self._perm[-1 - node] * self.length + depth] == code else None
        a, b = self._es[node], self._es[node + 1]
        i = a + code  # dense fast path: a node that has every code (the root, usually)
        if i < b and self._ec[i] == code:
            return self._ech[i]
        i = bisect_left(self._ec, code, a, b)  # else a bounded binary search
        if i < b and self._ec[i] == code:
            return self._ech[i]
        return None

    def walk(self, codes: tuple[int, ...] | list[int]) -> int | None:
        """The node for a prefix of codes, or None when no track starts with it."""
        node: int | None = ROOT
        for depth, c in enumerate(codes):
            node = self.child(node, depth, int(c))
            if node is None:
                return None
        return node

    def row(self, node: int | None, depth: int) -> int | None:
        """The catalog row at a full-length prefix, else None."""
        if node is None or depth != self.length or node >= 0:
            return None
        return int(self.perm[-1 - node])

    def lookup(self, codes: tuple[int, ...] | list[int]) -> int | None:
        """Exact decode: the catalog row whose full sequence is ``codes``, or None."""
        if len(codes) != self.length:
            return None
        return self.row(self.walk(codes), len(codes))

    # -- persistence and accounting -------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """Arrays to store (the code array is stored by the tokenizer)."""
        return {"trie_perm": self.perm, "trie_edge_start": self.edge_start,
                "trie_edge_code": self.edge_code, "trie_edge_child": self.edge_child,
                "trie_depth_start": self.depth_start}

    @classmethod
    def from_arrays(cls, codes: np.ndarray, arrays: dict[str, np.ndarray]) -> CodeTrie:
        return cls(codes, arrays["trie_perm"], arrays["trie_edge_start"],
                   arrays["trie_edge_code"], arrays["trie_edge_child"], arrays["trie_depth_start"])

    @property
    def n_nodes(self) -> int:
        return len(self.edge_start) - 1

    def nbytes(self) -> int:
        """Bytes held beyond the code array itself."""
        return sum(int(a.nbytes) for a in self.arrays().values())


class IdTrie:
    """The catalog trie in a language model's token ids (from ``MusicTokenizer.trie_for``).

    ``trie.allowed(prefix)`` -> token ids that may follow ``prefix`` (a tuple of ids, after
    the music-open token); ``trie.track(prefix)`` -> track id at a full sequence, else None.
    A query whose parent prefix was asked before (as in beam search) is one cached
    dictionary lookup plus one trie step; others walk from the root.
    """

    def __init__(self, base: CodeTrie, position_ids: list[np.ndarray], track_ids: list[str],
                 cache_size: int = 1 << 16) -> None:
        self.base = base
        self.length = base.length
        self.track_ids = track_ids
        self.position_ids = [p.tolist() for p in position_ids]  # position -> code -> token id
        # token id -> code, per position: one id may stand for different codes at different positions
        self._code_at = [{int(tid): code for code, tid in enumerate(ids)} for ids in self.position_ids]
        # the token id of every edge, so a node's allowed list is one slice
        depth_of_edge = _edge_depths(base)
        edge_tok = np.empty(len(base.edge_code), np.int32)
        for d in range(self.length):
            sel = depth_of_edge == d
            edge_tok[sel] = np.asarray(position_ids[d], np.int32)[base.edge_code[sel]]
        self.edge_tok = edge_tok
        self._et = memoryview(edge_tok)
        self._cache: OrderedDict[tuple[int, ...], tuple[int | None, list[int]]] = OrderedDict()
        self._cache_size = cache_size
        self._root = self._make_entry(ROOT, 0)

    @classmethod
    def from_sequences(cls, sequences: Mapping[str, Sequence[int]]) -> IdTrie:
        """``IdTrie.from_sequences({"t1": [5, 9, 2], "t2": [5, 7, 1]})``: a trie over given token ids.

        Every sequence must have the same length and be distinct (``ValueError`` naming the
        tracks otherwise), as the music tokenizer's are; ids are sorted per position, so
        ``allowed`` lists come out in ascending order.
        """
        ids = list(sequences)
        if not ids:
            raise ValueError("a catalog trie needs at least one track")
        length = len(sequences[ids[0]])
        for t in ids:
            if len(sequences[t]) != length:
                raise ValueError(f"track {t!r} has {len(sequences[t])} tokens but {ids[0]!r} has {length}: "
                                 "every track needs a sequence of the same length")
        if length < 1:
            raise ValueError("every track needs at least one token")
        rows = np.asarray([list(sequences[t]) for t in ids], dtype=np.int64).reshape(len(ids), length)
        if (rows < 0).any():
            raise ValueError("token ids must be non-negative")
        order = np.lexsort(rows.T[::-1])
        same = np.flatnonzero((rows[order][1:] == rows[order][:-1]).all(axis=1))
        if same.size:
            a, b = ids[order[same[0]]], ids[order[same[0] + 1]]
            raise ValueError(f"tracks {a!r} and {b!r} share one sequence")
        codes = np.empty(rows.shape, np.uint16)
        position_ids = []
        for d in range(length):
            uniq, inverse = np.unique(rows[:, d], return_inverse=True)
            if len(uniq) > np.iinfo(np.uint16).max:
                raise ValueError(f"position {d} uses {len(uniq)} distinct token ids (at most 65535)")
            codes[:, d] = inverse.reshape(-1)
            position_ids.append(uniq)
        return cls(CodeTrie.build(codes), position_ids, ids)

    @property
    def token_ids(self) -> set[int]:
        """Every music token id this trie can emit."""
        return {tid for codes in self._code_at for tid in codes}

    def nbytes(self) -> int:
        return int(self.edge_tok.nbytes)

    def _step(self, node: int | None, depth: int, tok: int) -> int | None:
        if node is None or depth >= self.length:
            return None
        code = self._code_at[depth].get(tok)
        return None if code is None else self.base.child(node, depth, code)

    def _make_entry(self, node: int | None, depth: int) -> tuple[int | None, list[int]]:
        if node is None or depth >= self.length:
            return (node, [])
        if node >= 0:
            b = self.base
            return (node, self._et[b._es[node]:b._es[node + 1]].tolist())
        b = self.base
        code = b._codes[b._perm[-1 - node] * self.length + depth]
        return (node, [self.position_ids[depth][code]])

    def _entry(self, prefix: tuple[int, ...]) -> tuple[int | None, list[int]]:
        depth = len(prefix)
        if depth == 0:
            return self._root
        hit = self._cache.get(prefix)
        if hit is not None:
            return hit
        parent = self._cache.get(prefix[:-1]) if depth > 1 else self._root
        if parent is not None:
            node = self._step(parent[0], depth - 1, prefix[-1])
        else:
            node = ROOT
            for d, tok in enumerate(prefix):
                node = self._step(node, d, tok)
        entry = self._make_entry(node, depth)
        if self._cache_size:
            self._cache[prefix] = entry
            if len(self._cache) > self._cache_size:
                try:
                    self._cache.popitem(last=False)
                except KeyError:  # another thread emptied it first
                    pass
        return entry

    def allowed(self, prefix: tuple[int, ...]) -> list[int]:
        """Token ids that may come next after ``prefix`` ([] at a full or invalid prefix).

        The list is shared with the trie's cache (that is what makes a query O(1) even where
        a node has hundreds of children): copy it before changing it.
        """
        return self._entry(tuple(prefix))[1]

    def allowed_array(self, prefix: tuple[int, ...]) -> np.ndarray:
        return np.asarray(self.allowed(prefix), dtype=np.int64)

    def track(self, prefix: tuple[int, ...]) -> str | None:
        """The track id whose full sequence is ``prefix``, else None."""
        prefix = tuple(prefix)
        node, _ = self._entry(prefix)
        row = self.base.row(node, len(prefix))
        return None if row is None else self.track_ids[row]


def _edge_depths(trie: CodeTrie) -> np.ndarray:
    """The prefix length each edge leaves from (nodes, and so edges, are stored depth by depth)."""
    out = np.zeros(len(trie.edge_code), np.int64)
    bounds = trie.edge_start[trie.depth_start]
    for d in range(len(bounds) - 1):
        out[bounds[d]:bounds[d + 1]] = d
    return out
