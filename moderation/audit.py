"""Audit trail: who did what to which subject, written in the same transaction as the change."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from moderation.storage.tables import AuditEventRow


def record(
    session: Session, actor: str, event: str, subject_type: str, subject_id: str, **detail: Any
) -> None:
    session.add(
        AuditEventRow(
            actor=actor[:128],
            action=event,
            subject_type=subject_type,
            subject_id=str(subject_id)[:256],
            detail=detail,
        )
    )
