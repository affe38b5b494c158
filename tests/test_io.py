"""Atomic writes: a failed or interrupted write leaves the old file as it was and no partial new one, and an OS
error is one line naming the file and the errno."""
import errno
import resource
from contextlib import contextmanager

import pytest

from evolq_pl.io import WriteError, atomic_path, write_csv_atomic, write_text_atomic


@contextmanager
def file_size_limit(nbytes: int):
    """``ulimit -f``: writes past ``nbytes`` fail with EFBIG (Python ignores SIGXFSZ) until the block ends."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_success_replaces_the_file_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".json" and tmp.name.startswith(".results.")
        tmp.write_text("new")
        assert target.read_text() == "old"  # nothing visible until the write is complete
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["results.json"]


@pytest.mark.parametrize("existing", [True, False])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_partial_one(tmp_path, existing):
    target = tmp_path / "summary.md"
    if existing:
        target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("the writer failed")
    assert [p.name for p in tmp_path.iterdir()] == (["summary.md"] if existing else [])
    assert not existing or target.read_text() == "old"


def test_file_too_large_is_one_line_naming_the_file_and_errno(tmp_path):
    target = tmp_path / "big.txt"
    target.write_text("old")
    with file_size_limit(1024), pytest.raises(WriteError) as info:
        write_text_atomic(target, "x" * 4096)
    assert str(info.value) == f"cannot write {target}: File too large (errno {errno.EFBIG}, EFBIG)"
    assert isinstance(info.value, OSError) and "\n" not in str(info.value)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["big.txt"]


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(WriteError, match=rf"cannot write {tmp_path}/no/x.txt: No such file or directory \(errno 2, ENOENT\)"):
        write_text_atomic(tmp_path / "no" / "x.txt", "x")


def test_csv_columns_follow_the_first_row_or_the_names_given(tmp_path):
    rows = [{"a": 1, "b": 0.5}, {"a": 2, "b": None}]
    assert write_csv_atomic(tmp_path / "t.csv", rows).read_bytes() == b"a,b\r\n1,0.5\r\n2,\r\n"
    write_csv_atomic(tmp_path / "t.csv", rows, ["b", "a"])  # replaces the file, columns in the order named
    assert (tmp_path / "t.csv").read_bytes() == b"b,a\r\n0.5,1\r\n,2\r\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]
