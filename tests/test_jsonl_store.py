"""common.jsonl_store: the resumable jsonl file behind answer files and the benchmark's raw.jsonl."""
import json

import pytest

from common.errors import UserError
from common.jsonl_store import JsonlStore


def test_records_round_trip_and_done_ids(tmp_path):
    store = JsonlStore(tmp_path / "sub" / "a.jsonl", ensure_ascii=False)
    assert store.records() == [] and store.done_ids() == set()
    store.append({"question_id": 1, "text": "é"})
    store.append({"question_id": "q2"})
    assert store.records() == [{"question_id": 1, "text": "é"}, {"question_id": "q2"}]
    assert store.done_ids() == {1, "q2"} and "é" in store.path.read_text(encoding="utf-8")
    store.reset()
    assert not store.path.exists() and store.records() == []


def test_a_cut_last_record_is_redone_and_a_complete_one_kept(tmp_path):
    store = JsonlStore(tmp_path / "a.jsonl")
    store.path.write_text('{"question_id": 1}\n{"question_id": 2, "choi')
    assert store.done_ids() == {1}
    store.append({"question_id": 2})
    assert [json.loads(x) for x in store.path.read_text().splitlines()] == [{"question_id": 1}, {"question_id": 2}]
    store.path.write_text(store.path.read_text().rstrip("\n"))  # a complete last record without its newline
    store.append({"question_id": 3})
    assert store.done_ids() == {1, 2, 3}


@pytest.mark.parametrize("text", ["my notes, no newline", "not json\n{\"question_id\": 1}\n", '{"id": 1}\n'])
def test_a_foreign_file_is_one_line_and_untouched(tmp_path, text):
    store = JsonlStore(tmp_path / "a.jsonl", what="answer record")
    store.path.write_text(text)
    with pytest.raises(UserError) as e:
        store.done_ids()
    assert "a.jsonl:1 is not an answer record" in str(e.value) and "\n" not in str(e.value)
    assert store.path.read_text() == text
