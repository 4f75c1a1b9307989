"""Queries more than one part of the platform reads."""

from __future__ import annotations

from sqlalchemy import Subquery, func, select

from cloud_bridge.store.schema import cert_counts


def confirmed_per_cert() -> Subquery:
    """cert_no -> n: confirmations counted by verified records, summed over gateways (a subquery to join)."""
    return (
        select(cert_counts.c.cert_no, func.sum(cert_counts.c.confirmed).label("n"))
        .group_by(cert_counts.c.cert_no)
        .subquery()
    )
