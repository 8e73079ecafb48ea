"""The output store against a model (SPEC 6), and its memory bound.

Whatever the chunk sizes, memory budget and log cap: paging through `read`
returns exactly the readable chunks (everything from `first_seq`: the log
keeps the newest within its cap), in order, unaltered, within each page's budget; and memory grows
with bytes, not with the number of chunks.
"""

from __future__ import annotations

import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_exec.core import log_records, output
from jupyter_exec.core.output import OutputStore

chunk_lists = st.lists(
    st.tuples(
        # seq step (exited/closed also take seqs); 0: the same read as the chunk
        # before (the next seq, one `append_run` of several chunks)
        st.integers(0, 2),
        st.sampled_from(["stdout", "stderr", "pty"]),
        st.sampled_from([1, 7, 100, 3000, 9000]),
        st.integers(0, 255),
    ),
    max_size=120,
)


def feed(store: OutputStore, spec: list[tuple[int, str, int, int]]) -> dict[int, bytes]:
    """Append the spec's chunks, runs of one read together; the chunks by seq."""
    chunks: dict[int, bytes] = {}
    runs: list[tuple[int, str, list[bytes]]] = []
    seq = 0
    for step, stream, size, byte in spec:
        data = bytes([byte]) * size
        if step == 0 and runs:
            first, stream, pieces = runs[-1]
            pieces.append(data)
            seq += 1
        else:
            seq += max(step, 1)
            runs.append((seq, stream, [data]))
        chunks[seq] = data
    for first, stream, pieces in runs:
        store.append_run(first, stream, pieces)
    return chunks


@settings(max_examples=150)
@given(
    chunk_lists,
    st.sampled_from([0, 50, 500, 5000, 1 << 20]),
    st.sampled_from([0, 100, 3000, 20000, 1 << 30]),
    st.sampled_from([0, 1, 777, 1 << 30]),
    st.booleans(),
)
def test_paging_returns_exactly_the_readable_chunks(
    tmp_path_factory, spec, retained, log_cap, budget, small_windows
):
    if small_windows:  # exercise index gaps and window edges with few chunks
        output.INDEX_SPACING, log_records.READ_WINDOW = 1000, 4096
    path = tmp_path_factory.mktemp("store") / "x.log"
    store = OutputStore(path, retained, log_cap)
    try:
        chunks = feed(store, spec)
        seq = max(chunks, default=0)
        readable = [q for q in chunks if q >= store.first_seq]
        if log_cap:
            # The log holds every chunk, and of them the newest that fit its cap: past
            # it, its head is cut to 7/8 of it (at an index entry, 1/16 of it apart;
            # the last entry on always stays), and `first_seq` says where it starts.
            assert store._last_logged_seq == max(chunks, default=0)
            assert store.log_bytes <= log_cap or len(store._index_seqs) == 1
            if store.first_seq > 1:
                record = log_records.HEADER.size + max(len(d) for d in chunks.values())
                assert store.log_bytes + store._spacing + record >= log_cap - log_cap // 8
            assert readable == [q for q in chunks if q >= store._index_seqs[0]]
        got, cursor = [], 0
        while page := store.read(cursor, budget):
            assert len(page) == 1 or sum(len(c.data) for c in page) <= budget
            assert all(c.seq > cursor for c in page)
            got += page
            cursor = page[-1].seq
        assert [c.seq for c in got] == readable
        assert all(chunks[c.seq] == c.data for c in got)
        for after in range(0, seq + 2, max(1, seq // 10)):
            first = store.read(after, budget)[:1]
            assert [c.seq for c in first] == [q for q in readable if q > after][:1]
    finally:
        output.INDEX_SPACING, log_records.READ_WINDOW = 64 * 1024, 1 << 20
        store.close(remove=True)


@settings(max_examples=150)
@given(
    chunk_lists,
    st.sampled_from([0, 50, 500, 5000, 1 << 20]),
    st.sampled_from([0, 100, 3000, 20000, 1 << 30]),
    st.sampled_from([0, 1, 777, 1 << 30]),
    st.one_of(st.none(), st.integers(1, 250)),
)
def test_cursor_paging_matches_read(tmp_path_factory, spec, retained, log_cap, budget, stop):
    """What the outbox does (memory inline, else a `LogRange` read as a thread
    would, or inline from the page cache) pages through the same chunks as `read`, below `stop_seq`, even
    where seqs have holes (exited/closed take seqs) before what memory holds."""
    path = tmp_path_factory.mktemp("store") / "x.log"
    store = OutputStore(path, retained, log_cap)
    try:
        feed(store, spec)
        expected = [c for c in store.read(0, 1 << 40) if stop is None or c.seq < stop]
        got, cursor = [], 0
        while True:
            span = store.log_range(cursor, stop, budget)
            if span is None:
                page, cut = store.take_memory(cursor, stop, budget)
            else:
                page, cut = span.read()
                # Inline from the page cache (just written: it is there), the same.
                assert span.read_cached() == (page, cut)
            assert len(page) <= 1 or sum(len(c.data) for c in page) <= budget
            got += page
            if not page:
                assert not cut
                break
            cursor = page[-1].seq
        assert [(c.seq, c.data) for c in got] == [(c.seq, c.data) for c in expected]
    finally:
        store.close(remove=True)


def test_tiny_chunks_cost_about_the_retained_budget(tmp_path):
    """Before: 1 MiB retained of 2-byte chunks cost 81 MiB for a million chunks (an
    object per chunk uncounted, and a 16-byte index entry per logged chunk); 100k
    chunks cost 15 MiB."""
    tracemalloc.start()
    try:
        store = OutputStore(tmp_path / "x.log", 1 << 20, 1 << 30)
        for seq in range(1, 100_001):
            store.append(seq, "stdout", b"%d\n" % (seq % 10))
        used = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert used < 3 << 20, used
    last = store.read(99_990, 1 << 20)
    assert [c.seq for c in last] == list(range(99_991, 100_001))
    first = store.read(0, 10)
    assert first[0].seq == 1 and first[0].data == b"1\n"
    store.close(remove=True)
