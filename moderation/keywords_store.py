"""Custom keyword terms kept in the database (on top of the list files), with change logging."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from moderation.errors import Conflict, NotFound
from moderation.storage.tables import ChangeRow, KeywordTermRow


def add_term(session: Session, category: str, term: str, score: float = 1.0) -> int:
    existing = session.scalar(
        select(KeywordTermRow).where(
            KeywordTermRow.category == category, KeywordTermRow.term == term
        )
    )
    if existing is not None:
        raise Conflict(f"term already in category {category!r}", field="term")
    row = KeywordTermRow(category=category, term=term, score=score)
    session.add(row)
    session.flush()
    session.add(ChangeRow(topic="keyword", ref_id=row.id, op="add"))
    return row.id


def remove_term(session: Session, term_id: int) -> None:
    row = session.get(KeywordTermRow, term_id)
    if row is None:
        raise NotFound(f"no keyword term {term_id}", field="term_id")
    session.delete(row)
    session.add(ChangeRow(topic="keyword", ref_id=term_id, op="remove"))
